"""The /docs reference page renders in Chromium under its Content-Security-Policy:
its inline stylesheet applies (allowed by hash), and the browser reports no violation."""

from __future__ import annotations


def test_the_docs_page_renders_styled_under_its_policy(browser, server, screenshots):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        answer = page.goto(server.url + "/docs")
        assert answer.status == 200
        assert "style-src 'sha256-" in answer.headers["content-security-policy"]
        # The stylesheet's `.method { display: inline-block }` and `body { max-width: 60rem }`.
        assert page.eval_on_selector(".method", "e => getComputedStyle(e).display") == (
            "inline-block"
        )
        assert page.eval_on_selector("body", "e => getComputedStyle(e).maxWidth") == "960px"
        page.screenshot(path=str(screenshots / "docs.png"))
    finally:
        context.close()
    assert errors == [], "the browser refused part of the page"
