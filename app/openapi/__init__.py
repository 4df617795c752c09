"""The API's OpenAPI 3 document and its reference page.

`document.build(app)` makes the document from the app's routes and marshmallow
schemas; `page.render(document)` turns it into one self-contained HTML page (no
script, nothing fetched from elsewhere). `app.api.openapi` serves both.
"""
