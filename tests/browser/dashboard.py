"""Reading and driving the dashboard page the way a person does, for the browser tests."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo


def local_midnight(day: date, zone: str) -> str:
    """RFC 3339 UTC of the start of `day` in `zone` (what the page sends as a period bound)."""
    start = datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(ZoneInfo("UTC"))
    return start.isoformat().replace("+00:00", "Z")


def number(text: str):
    """A number as the page shows it ("1,234", "2.5", "—")."""
    text = text.strip().replace(",", "")
    if text == "—":
        return None
    return float(text) if "." in text else int(text)


class Dashboard:
    """One signed-in (or not yet) dashboard tab."""

    def __init__(self, page):
        self.page = page

    # -- waiting -----------------------------------------------------------------------

    def settle(self, section: str) -> None:
        """Wait until the section (`usage`, `events`, `meters`) is no longer loading."""
        self.page.wait_for_function(
            "id => document.getElementById(id).getAttribute('aria-busy') !== 'true'",
            arg=f"{section}-section",
        )

    # -- actions -----------------------------------------------------------------------

    def sign_in(self, key: str) -> None:
        self.page.get_by_label("Org API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#app-view").wait_for(state="visible")
        self.settle("meters")

    def create_meter(
        self,
        name: str,
        event_name: str,
        aggregation: str = "sum",
        dimensions: str = "",
        currency: str = "usd",
    ) -> None:
        if self.page.locator("#new-meter").get_attribute("open") is None:
            self.page.get_by_text("New meter", exact=True).click()
        form = self.page.locator("#new-meter-form")
        form.get_by_label("Name", exact=True).fill(name)
        form.get_by_label("Event name").fill(event_name)
        form.get_by_label("Aggregation").select_option(aggregation)
        form.get_by_label("Currency").fill(currency)
        form.get_by_label("Dimensions").fill(dimensions)
        form.get_by_role("button", name="Create meter").click()
        self.page.locator("#new-meter-status:not(.loading)").wait_for()

    def open_meter(self, name: str) -> None:
        self.page.get_by_role("button", name=name, exact=True).click()
        self.settle("usage")
        self.settle("events")

    def show_usage(
        self,
        *,
        window: str | None = None,
        split: str | None = None,
        filters: dict[str, str] | None = None,
        layout: str | None = None,
    ) -> None:
        page = self.page
        if window:
            page.get_by_label("Window").select_option(window)
        if split is not None:
            page.get_by_label("Split by").select_option(split)
        for name, value in (filters or {}).items():
            page.locator(f"#filter-{name}").fill(value)
        if layout:
            page.get_by_label(layout).check()
        page.get_by_role("button", name="Show usage").click()
        self.settle("usage")

    def search_events(self, *, user: str = "", idempotency: str = "") -> None:
        form = self.page.locator("#events-form")
        form.get_by_label("User").fill(user)
        form.get_by_label("Idempotency key").fill(idempotency)
        self.page.get_by_role("button", name="Search events").click()
        self.settle("events")

    # -- reading -----------------------------------------------------------------------

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text().strip()

    def rows(self, table: str) -> list[list[str]]:
        """The body cells of a table, as shown."""
        return self.page.eval_on_selector(
            table,
            "t => [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent.trim()))",
        )

    def chart(self) -> dict:
        """The data and options the chart library is drawing."""
        return self.page.evaluate("""() => {
            const chart = Chart.getChart('usage-chart');
            return {labels: chart.data.labels,
                    datasets: chart.data.datasets.map(d => ({label: d.label, data: d.data})),
                    stacked: chart.options.scales.x.stacked && chart.options.scales.y.stacked};
        }""")

    def event_ids(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#events-table tbody tr", "rows => rows.map(r => r.dataset.eventId)"
        )

    def download(self, button: str) -> tuple[str, str]:
        """Click a download button; (file name, content) of what the browser saved."""
        with self.page.expect_download() as info:
            self.page.get_by_role("button", name=button).click()
        download = info.value
        return download.suggested_filename, Path(download.path()).read_bytes().decode("utf-8")


def tab_to(page, selector: str, *, backwards: bool = False, limit: int = 80) -> None:
    """Press Tab (or Shift+Tab) until the focused element matches `selector`, as a keyboard user."""
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(limit):
        page.keyboard.press(key)
        if page.evaluate("s => document.activeElement?.matches(s) ?? false", selector):
            return
    raise AssertionError(f"{selector} cannot be reached with {key} in {limit} presses")


def focus_ring(page) -> str:
    """The outline style the focused element shows."""
    return page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
