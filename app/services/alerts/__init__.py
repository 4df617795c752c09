"""Alert rules on meters: the usage feed, its evaluation, and the crossings it announces."""
