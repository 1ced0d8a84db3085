"""The console's routes, one module per page (all under ``/console``)."""

from fastapi import APIRouter

from latam.console.pages import home, keys, letters, login, messages, topics

router = APIRouter(include_in_schema=False)
for _page in (home, login, topics, messages, letters, keys):
    router.include_router(_page.router, prefix="/console")
