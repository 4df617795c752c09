"""The customer portal (issue 16): tokens that let one end customer read their own
usage (`tokens`), the org's policy that revokes them and names the browser origins
allowed to use them (`policy`), and what a token may read (`usage`)."""
