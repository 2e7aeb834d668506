"""Airflow UI plugin: a "Training reports" page listing medcore runs and showing each report with its images.

The API server mounts the app below at /medcore-reports; the nav entry ("Training reports") embeds
it in the UI. Airflow does not authenticate plugin apps (a mounted app inherits none of the core
API's dependencies), so this app requires, on every route, what reading the runs of the
`medical_training` DAG requires: Airflow's own JWT (the Authorization header, or the UI's session
cookie) checked by the configured auth manager. No token gives 401, a bad one 403; a browser asking for a
page without a valid session (a link in the e-mail) is sent to Airflow's login and comes back after it.

Runs are read from `$MEDCORE_RUNS_ROOT`, else from the config's `runs_root` (`$MEDCORE_CONFIG` or
conditions.yaml), at each request, so new runs appear without restarting the server.

Every Airflow process loads every plugin, task processes included, so this module imports nothing
heavy: FastAPI and the API server's security code load when the first request arrives.
"""

# No `from __future__ import annotations`: FastAPI reads the route and dependency signatures at run
# time, and their types are imported inside build_app, where string annotations could not be resolved.
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin

__all__ = ["MedcoreReportsPlugin", "URL_PREFIX", "build_app"]

URL_PREFIX = "/medcore-reports"  # medcore.report.notify.UI_PREFIX builds e-mail links to these pages
# What the file route serves, by suffix; anything else (models, hidden temporary files) is refused.
SERVED = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".md": "text/markdown; charset=utf-8",
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


VERDICT_GLYPH = {"OK": "✅", "look": "⚠️", "failed": "❌"}  # beside the verdict's own words (medcore.report.render)


def _runs_root() -> Path:
    from fastapi import HTTPException

    from medcore.config import load_config, settings

    runs_root = settings().runs_root  # $MEDCORE_RUNS_ROOT
    if runs_root:
        return runs_root.expanduser().resolve()
    from medcore.errors import MedcoreError

    try:
        return load_config().runs_root
    except MedcoreError as exc:
        raise HTTPException(503, f"medcore config unreadable: {exc}") from None


def _run_folder(run_id: str) -> Path:
    """The folder of run `run_id` (a folder name as the list shows it), or 404; never anything outside the runs root."""
    from fastapi import HTTPException

    from medcore.layout import is_run_folder_name

    root = _runs_root()
    folder = root / run_id
    if not is_run_folder_name(run_id) or not _inside(folder, root) or not (folder / "run.json").is_file():
        raise HTTPException(404, "no such run")
    return folder


def _inside(folder: Path, root: Path) -> bool:
    """True if `folder`, symlinks resolved, is a folder inside `root`: a link out of the runs root is no run."""
    try:
        return folder.resolve().parent == root.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _read(path: Path) -> dict[str, Any]:
    from medcore.jsonio import read_json

    try:
        return read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # a half-written file must not take the page down


def _run_rows() -> list[dict[str, Any]]:
    root = _runs_root()
    rows = []
    for folder in root.iterdir() if root.is_dir() else ():
        if not _inside(folder, root):
            continue
        info = _read(folder / "run.json")
        if not info:
            continue
        summary, promotion, mail = (_read(folder / name) for name in ("summary.json", "promotion.json", "notify.json"))
        decisions = [f"{c}: {d.get('decision')}" for c, d in (promotion.get("conditions") or {}).items()]
        rows.append(
            {
                "folder": folder.name,
                "run_id": info.get("run_id", folder.name),
                "started": info.get("started", ""),
                "models": f"{summary['succeeded']}/{summary['planned']}" if summary else "running or no report",
                "verdict": summary.get("verdict_words") or ("—" if summary else "running or no report"),
                "state": summary.get("verdict"),
                "failed": summary.get("failed"),
                "report": (folder / "report.md").is_file(),
                "champions": ", ".join(decisions) or "—",
                "mail": mail.get("status", "—"),
                "cards": len(_cards(folder)),
            }
        )
    return sorted(rows, key=lambda r: r["started"], reverse=True)


def _trend_section(rows: list[dict[str, Any]]) -> list[str]:
    """Each condition's ROC AUC across nights, as drawn by the newest report that has the plots."""
    for r in rows:
        trend = _runs_root() / r["folder"] / "trend"
        plots = sorted(trend.glob("*.png")) if r["report"] and trend.is_dir() else []
        if plots:
            lines = [
                "",
                "## Trend per condition",
                "",
                f"Champion and challenger ROC AUC by night with their intervals, from run `{r['run_id']}`.",
                "",
            ]
            return lines + [
                f"![{p.stem} ROC AUC by night](runs/{quote(r['folder'])}/files/trend/{quote(p.name)})" for p in plots
            ]
    return []


def _cards(folder: Path) -> list[tuple[str, str]]:
    """(condition, profile) of every model card in a run folder (`<condition>/<profile>/model_card.md`)."""
    return sorted(
        (card.parent.parent.name, card.parent.name)
        for card in folder.glob("*/*/model_card.md")
        if not any(part.startswith(".") for part in card.relative_to(folder).parts)
    )


def _page(markdown: str, title: str, link: Callable[[str], str | None], banners: list[str] | None = None):
    from fastapi.responses import HTMLResponse

    from medcore.report.render import render_html

    return HTMLResponse(render_html(markdown, title=title, link=link, banners=banners or []))


def _wants_page(request: Any) -> bool:
    """A browser asking for a page (not a script, nor an image inside a page that will redirect anyway)."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def _login_url(request: Any) -> str:
    """Airflow's own login entry (`/api/v2/auth/login`, whichever auth manager is configured) with `next` set to
    the requested page; Airflow checks `next` is on its own host and sends the reader back there after login."""
    from urllib.parse import urlencode

    airflow_root = request.scope.get("root_path", "").removesuffix(URL_PREFIX)  # Airflow under a sub-path too
    return f"{airflow_root}/api/v2/auth/login?{urlencode({'next': str(request.url)})}"


def _access_check() -> Callable:
    """The dependency every route has: Airflow's own check, made as its core routes make it."""
    from fastapi import Depends, HTTPException, Request
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(auto_error=False)

    async def require_run_access(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> None:
        """The user behind the bearer token or the UI's session cookie (`get_user`: 401 without one, 403 for a
        bad one), allowed to read runs of DAG_ID (403)."""
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
        from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
        from starlette.concurrency import run_in_threadpool

        from medcore.airflow_adapter import DAG_ID

        try:
            user = await get_user(request=request, _oauth_token=None, bearer_credentials=credentials)
        except HTTPException as refused:
            if refused.status_code in (401, 403) and _wants_page(request):
                # A reader following a link from the e-mail: log in, then come back to this very page.
                raise HTTPException(303, "log in first", headers={"Location": _login_url(request)}) from None
            raise
        # The permission check reads the metadata database: keep it off the event loop, as FastAPI would.
        await run_in_threadpool(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID), request, user)

    return require_run_access


def _run_list() -> str:
    """The front page's Markdown: every run with a run.json, newest first, and the trend plots."""
    from medcore.airflow_adapter import DAG_ID

    rows = _run_rows()
    lines = [
        "# Training reports",
        "",
        f"Runs of `{DAG_ID}` in `{_runs_root()}`, newest first. Research use only.",
        "",
        "| run | started | verdict | models succeeded | champions | e-mail | model cards |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"[{r['run_id']}](runs/{quote(r['folder'])}/)" if r["report"] else f"{r['run_id']} (no report yet)"
        state = f" ❌ {r['failed']} failed" if r["failed"] else ""  # the word too: the glyph may not render
        mail = "⚠️ failed" if r["mail"] == "failed" else r["mail"]
        cards = f"[{r['cards']}](runs/{quote(r['folder'])}/cards/)" if r["cards"] else "—"
        verdict = f"{VERDICT_GLYPH.get(r['state'], '')} {r['verdict']}".strip()  # the glyph, then its word
        lines.append(
            f"| {name} | {r['started']} | {verdict} | {r['models']}{state} | {r['champions']} | {mail} | {cards} |"
        )
    if not rows:
        lines.append("| no runs yet | | | | | | |")
    lines += _trend_section(rows)
    return "\n".join(lines) + "\n"


def _banners(folder: Path) -> list[str]:
    """What went wrong after the report was written: a failed e-mail, a condition without a champion decision."""
    banners = []
    mail = _read(folder / "notify.json")
    if mail.get("status") == "failed":
        banners.append(
            f"The report e-mail was not sent ({mail.get('error')}); this page and report.md are the "
            f"report. Connection: {mail.get('conn_id')}, {mail.get('time')}."
        )
    for condition, decision in (_read(folder / "promotion.json").get("conditions") or {}).items():
        if decision.get("decision") == "error":
            banners.append(f"No champion decision for {condition}: {decision.get('reason')}")
    return banners


def _report_link(url: str) -> str:
    """A link in report.md (relative to the run folder) as seen from its page at runs/<id>/."""
    if url.endswith("/model_card.md") and url.count("/") == 2:  # <condition>/<profile>/model_card.md
        return "cards/" + quote(url.rsplit("/", 1)[0])
    return url if url.startswith(("../", "files/")) else f"files/{quote(url)}"


def _report_page(run_id: str):
    """One run's report.md as HTML, images served from the run folder; problems after the report as banners."""
    from fastapi import HTTPException

    folder = _run_folder(run_id)
    report = folder / "report.md"
    if not report.is_file():
        raise HTTPException(404, "this run has no report yet (it may still be running)")
    header = "[← all training reports](../../) · [report.md](files/report.md)\n\n"
    text = header + report.read_text(encoding="utf-8")
    return _page(text, f"medcore report {run_id}", _report_link, _banners(folder))


def _cards_page(run_id: str):
    """The model cards of one run, one per (condition, profile) that got as far as evaluation."""
    cards = _cards(_run_folder(run_id))
    lines = [f"# Model cards of {run_id}", "", "[← all training reports](../../../) · [report](../)", ""]
    lines += [f"- [{c}/{p}]({quote(c)}/{quote(p)})" for c, p in cards] or ["No model of this run has a card yet."]
    return _page("\n".join(lines) + "\n", f"model cards {run_id}", link=lambda url: url)


def _card_page(run_id: str, condition: str, profile: str):
    """One model's model_card.md as HTML."""
    from fastapi import HTTPException

    folder = _run_folder(run_id)
    if (condition, profile) not in _cards(folder):
        raise HTTPException(404, "no model card for this model")
    card = folder / condition / profile / "model_card.md"
    header = "[← model cards of this run](./) · [report](../../) · [all training reports](../../../../)\n\n"
    return _page(header + card.read_text(encoding="utf-8"), f"model card {condition}/{profile}", link=lambda url: url)


def _run_file(run_id: str, path: str):
    """A file inside the run folder (images, report.md, JSON, CSV); 404 for anything outside it or not served."""
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    folder = _run_folder(run_id).resolve()
    target = (folder / path).resolve()
    # Resolving first means "..", absolute paths and symlinks pointing out of the run all land outside it.
    inside = target.is_relative_to(folder)
    hidden = inside and any(part.startswith(".") for part in target.relative_to(folder).parts)
    if not inside or hidden or not target.is_file() or target.suffix.lower() not in SERVED:
        raise HTTPException(404, "no such file in this run")
    return FileResponse(
        target,
        media_type=SERVED[target.suffix.lower()],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=60"},
    )


def build_app() -> Any:
    """The FastAPI app: the run list, one page per report, and the files of a run; all behind Airflow's login."""
    from fastapi import Depends, FastAPI
    from fastapi.responses import FileResponse, HTMLResponse

    app = FastAPI(
        title="medcore training reports",
        dependencies=[Depends(_access_check())],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )  # no unauthenticated route listing either

    @app.get("/", response_class=HTMLResponse)
    def list_runs() -> HTMLResponse:
        """Every run with a run.json, newest first: models succeeded, champion decisions, e-mail status."""
        return _page(_run_list(), "Training reports", link=lambda url: url)

    @app.get("/runs/{run_id}/", response_class=HTMLResponse)
    def show_report(run_id: str) -> HTMLResponse:
        return _report_page(run_id)

    @app.get("/runs/{run_id}/cards/", response_class=HTMLResponse)
    def list_cards(run_id: str) -> HTMLResponse:
        return _cards_page(run_id)

    @app.get("/runs/{run_id}/cards/{condition}/{profile}", response_class=HTMLResponse)
    def show_card(run_id: str, condition: str, profile: str) -> HTMLResponse:
        return _card_page(run_id, condition, profile)

    @app.get("/runs/{run_id}/files/{path:path}")
    def run_file(run_id: str, path: str) -> FileResponse:
        return _run_file(run_id, path)

    return app


class _OnFirstRequest:
    """An ASGI app that builds the real one (`build`) when the first request arrives, then hands every request to it."""

    def __init__(self, build: Callable[[], Any]):
        self._build, self._app = build, None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


class MedcoreReportsPlugin(AirflowPlugin):
    """Training reports in the Airflow UI: the app above, and a top-level nav entry that embeds it (named
    "Reports": the nav's buttons are 80 px wide, which cut "Training reports" to "Training r…")."""

    name = "medcore_reports"
    fastapi_apps = [{"app": _OnFirstRequest(build_app), "url_prefix": URL_PREFIX, "name": "medcore training reports"}]
    external_views = [
        {
            "name": "Reports",
            "href": URL_PREFIX.lstrip("/") + "/",  # relative to the UI's base URL, so a proxied sub-path works
            "url_route": "training-reports",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
