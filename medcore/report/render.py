"""The status report rendered: the view through Jinja2 into report.md and summary.json, and report.md to HTML."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup

from medcore.jsonio import atomic_write_text, to_jsonable, write_json
from medcore.layout import RunLayout
from medcore.report.advice import diagnose, fmt, next_steps, shortcut_findings, with_interval
from medcore.report.compare import conditions_overview
from medcore.report.jinja import TEMPLATES_DIR, environment
from medcore.report.view import gather_run, night_budget_view

__all__ = [
    "gather_run",
    "night_budget_view",
    "render_report",
    "write_report",
    "render_html",
    "markdown_to_html",
    "next_steps",
    "diagnose",
    "conditions_overview",
    "with_contents",
    "anchor",
    "TEMPLATES_DIR",
    "shortcut_findings",
]


def render_report(context: dict[str, Any], template: str = "status_report.md.j2") -> str:
    """Render `context` through a template in `templates/`."""
    env = environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    env.filters["ci"] = with_interval
    env.filters["delta"] = lambda v, digits=3: "n/a" if v is None else f"{v:+.{digits}f}"
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"
    return env.get_template(template).render(**context)


def write_report(run: RunLayout) -> dict[str, Any]:
    """Gather, render and atomically write `report.md` and `summary.json`; return the summary."""
    context = gather_run(run)
    template = "not_started.md.j2" if context.get("plan_error") else "status_report.md.j2"
    atomic_write_text(run.report_md, with_contents(render_report(context, template)))
    summary = {
        "run_id": context["run_id"],
        "report": run.report_md,
        "verdict": context["verdict"]["state"],
        "verdict_words": context["verdict"]["words"],
        "verdict_why": context["verdict"]["why"],
        "needs": context["verdict"]["needs"],
        "plan_error": context.get("plan_error"),
        "planned": context["planned"],
        "succeeded": context["succeeded"],
        "failed": context["failed"],
        "skipped": context["skipped"],
        "failures": [
            {"condition": m["condition"], "profile": m["profile"], **m["failure"]}
            for m in context["models"]
            if m["failed"]
        ],
        "nights": {n["condition"]: n["summary"] for n in context["nights"]},
        "night": context.get("night"),
    }
    write_json(run.summary_json, summary)
    return to_jsonable(summary)  # XCom and callers get plain JSON types


def render_html(
    markdown_text: str,
    *,
    title: str,
    link: Callable[[str], str | None] | None = None,
    banners: Sequence[str] = (),
    script: bool = True,
) -> str:
    """The report as one HTML page (for the e-mail and the Airflow UI): report.md converted, never re-written.

    Converting the very Markdown people read keeps the three renderings (file, e-mail, UI) from
    drifting apart. `banners` are plain-text warnings shown above the report (e.g. a failed e-mail).
    `script`: the few lines that open a collapsed section when a contents link points into it (not for e-mail).
    """
    env = environment(autoescape=True)
    body = markdown_to_html(markdown_text, link)
    return env.get_template("status_report.html.j2").render(
        title=title, body=Markup(body), banners=list(banners), script=script
    )


def markdown_to_html(text: str, link: Callable[[str], str | None] | None = None) -> str:
    """CommonMark with tables to HTML. Raw HTML in the text is escaped, never passed through.

    `link` maps every relative image source or link target (a path inside the run folder) to a URL
    the reader can open; returning None shows an image's alt text, or a link's text, instead.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    tokens = md.parse(text)
    for block in tokens:
        if block.children and link is not None:
            block.children = _relink(block.children, link)
    return md.renderer.render(_collapsible(tokens), md.options, {})


# Second-level sections for reference rather than for the morning: collapsed in HTML, like each model's section.
COLLAPSED_SECTIONS = (
    "Issues encountered",
    "Run parameters",
    "Data",
    "Artifacts of this run",
    "Grad-CAM on a new image",
    "More next steps",
)


def _collapsible(tokens: list) -> list:
    """Every h2/h3 gets the id `anchor` gives it (the contents link to them); each h3 section (one model) and each
    COLLAPSED_SECTIONS h2 becomes a closed <details> whose <summary> is the heading. Markdown's own raw HTML stays
    escaped: these tags are made here, never taken from the text."""
    from markdown_it.token import Token

    def html(content: str) -> Token:
        token = Token("html_block", "", 0)
        token.content = content
        return token

    out, in_summary = [], False
    open_levels: list[int] = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag in ("h2", "h3"):
            level = int(token.tag[1])
            while open_levels and open_levels[-1] >= level:
                open_levels.pop()
                out.append(html("</details>\n"))
            text = tokens[i + 1].content
            token.attrSet("id", anchor(text))
            if level == 3 or text in COLLAPSED_SECTIONS:
                open_levels.append(level)
                out.append(html("<details>\n<summary>"))
                in_summary = True
        out.append(token)
        if token.type == "heading_close" and in_summary:
            out.append(html("</summary>\n"))
            in_summary = False
    out.extend(html("</details>\n") for _ in open_levels)
    return out


def _is_relative(url: str | None) -> bool:
    from urllib.parse import urlsplit

    if not url or url.startswith(("/", "#")):
        return False
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc


def _relink(children: list, link: Callable[[str], str | None]) -> list:
    from markdown_it.token import Token

    out, dropping = [], False
    for token in children:
        if token.type == "image" and _is_relative(token.attrGet("src")):
            target = link(str(token.attrGet("src")))
            if target is None:
                out.append(Token("text", "", 0, content=f"[{token.content}]"))
                continue
            token.attrSet("src", target)
        elif token.type == "link_open" and _is_relative(token.attrGet("href")):
            target = link(str(token.attrGet("href")))
            if target is None:
                dropping = True  # keep the link's text, drop the link
                continue
            token.attrSet("href", target)
        elif token.type == "link_close" and dropping:
            dropping = False
            continue
        out.append(token)
    return out


def anchor(heading: str) -> str:
    """The fragment id GitHub gives a Markdown heading (lower case, punctuation dropped, spaces to hyphens), which
    the HTML rendering gives its headings too, so the contents' links work in both."""
    import re

    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def with_contents(markdown: str) -> str:
    """The report with its "## Contents" section filled from the headings that follow it: one line per section,
    the model sections of a section linked on its line."""
    import re

    lines = markdown.split("\n")
    try:
        at = lines.index("## Contents")
    except ValueError:
        return markdown
    entries: list[tuple[str, list[str]]] = []
    for line in lines[at + 1 :]:
        heading = re.match(r"^(##|###) (.+)$", line)
        if not heading:
            continue
        text = heading.group(2).strip()
        link = f"[{text.replace('`', '')}](#{anchor(text)})"
        if heading.group(1) == "##":
            entries.append((link, []))
        elif entries:
            entries[-1][1].append(link)
    toc = [f"- {link}" + (f": {', '.join(children)}" if children else "") for link, children in entries]
    return "\n".join(lines[: at + 1] + [""] + toc + lines[at + 1 :])
