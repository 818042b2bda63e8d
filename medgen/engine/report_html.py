"""report.html: the evaluation report (report.md) as one self-contained page that opens in any browser
offline - the comparison tables with the model, the baselines and the floors told apart, the warnings, and the
preview montages embedded in the file (PNG data URIs), so the page can be moved, mailed or archived alone.

The markdown is converted by Python-Markdown (its "tables" extension), not by hand. Raw HTML in the
markdown is not passed through: `&`, `<` and `>` are escaped first, so a case id or a path taken from a dataset
shows as text and cannot add markup or script to the page.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from medgen.files import atomic_write

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; }
code { background: #f2f2f4; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; display: block; overflow-x: auto;
        max-width: 100%; }
th, td { border: 1px solid #d0d0d5; padding: .25em .6em; text-align: right; }
td:first-child { white-space: nowrap; }
th { background: #f2f2f4; }
td:first-child, th:first-child { text-align: left; }
tr.model td { font-weight: 600; background: #eef6ee; }
tr.floor td { color: #555; background: #fafafa; font-style: italic; }
tr.baseline td { background: #f6f8fc; }
p strong { color: #b00020; }
img { max-width: 49%; border: 1px solid #ddd; margin: .5em .5% 0 0; vertical-align: top; }
"""


def markdown_to_html(text: str) -> str:
    """The body of the page: markdown with tables, raw HTML shown as text."""
    import markdown

    body = markdown.markdown(html.escape(text, quote=False), extensions=["tables"], output_format="html")
    # Inside code spans Markdown escapes again what was escaped above: undo its second pass there.
    body = re.sub(r"<code>(.*?)</code>", lambda m: "<code>" + m.group(1).replace("&amp;", "&") + "</code>", body,
                  flags=re.S)
    # Mark the rows of the comparison tables, so the model stands out from the floors it must beat.
    for prefix, cls in (("model", "model"), ("floor: ", "floor"), ("baseline: ", "baseline")):
        body = re.sub(rf"<tr>(\s*)<td>{re.escape(prefix)}", rf'<tr class="{cls}">\1<td>{prefix}', body)
    return body


def _embed_images(body: str, folder: Path) -> str:
    """Replace each <img src="name.png"> of a file in `folder` by the picture itself (a data URI)."""

    def embed(match: re.Match) -> str:
        name = html.unescape(match.group(2))
        path = folder / name
        if "/" in name or "\\" in name or not path.is_file() or path.suffix.lower() != ".png":
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'{match.group(1)}data:image/png;base64,{data}{match.group(3)}'

    return re.sub(r'(<img[^>]*\bsrc=")([^"]+)(")', embed, body)


def write_report_html(markdown_text: str, folder, title: str = "medgen evaluation") -> Path:
    """Write `folder`/report.html from the report's markdown (pictures it names are read from `folder`)."""
    folder = Path(folder)
    body = _embed_images(markdown_to_html(markdown_text), folder)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    return atomic_write(folder / "report.html", page)
