"""/docs: a human-readable API page rendered from /openapi.json by Swagger UI, whose assets the
gateway serves itself (the page works offline)."""

from __future__ import annotations

from tests import gateway_harness
from tests.gateway_harness import Gateway

database_url = gateway_harness.database_url
gateways = gateway_harness.gateways
gw = gateway_harness.gw


async def test_the_docs_page_and_its_assets_are_served(gw: Gateway) -> None:
    page = await gw.http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text and "https://" not in page.text  # nothing from a CDN
    for name, kind in (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")):
        asset = await gw.http.get(f"/docs/assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert len(asset.content) > 10_000
    assert (await gw.http.get("/docs/assets/index.html")).status_code == 404
    assert (await gw.http.get("/docs/assets/..%2F..%2Fswagger_ui_bundle%2F__init__.py")).status_code == 404
