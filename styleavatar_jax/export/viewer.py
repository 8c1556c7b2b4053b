"""One self-contained HTML page to look at an avatar: the textured mesh (GLB) in an
interactive 3D viewer, a turntable, a multi-view grid and a table of what made it.

The page needs no network when it is opened: the viewer (Google's `<model-viewer>`, which
bundles three.js; vendored, pinned and checked in `assets/`, see scripts/vendor_viewer.sh)
is inlined as a module script, the GLB is inlined as base64 and handed to the viewer as a
Blob URL, and the pictures are data: URIs. A Content-Security-Policy allows nothing else,
so a page that tried to reach the network would say so in the browser's console.

The GLB follows glTF's axes (+Y up, the face looking along +Z): the page's camera starts
on the +Z axis, so the face is in front, and orbits around the model's bounding box.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import os
from collections.abc import Mapping
from pathlib import Path

from styleavatar_jax.files import write_atomic

ASSETS = Path(__file__).resolve().parent / "assets"
VIEWER_JS = ASSETS / "model-viewer.min.js"  # @google/model-viewer 4.4.0, dist/model-viewer.min.js
VIEWER_SHA256 = ASSETS / "model-viewer.sha256"  # `sha256sum` format: "<hex>  model-viewer.min.js"
TURNTABLE_MIMES = ("image/gif", "video/mp4")
BACKGROUND = "#e6e6e6"  # neutral light grey, behind the model and around it
# What <body data-model=...> says: the page sets it when the viewer has the model or failed.
LOADED, FAILED = "loaded", "error"
# For scripted checks (export/browser.py): an expression that is truthy ("loaded" or
# "error") once the page knows, and one that stops the turning and faces the model.
SHOWN = "document.body && document.body.dataset.model !== 'loading' && document.body.dataset.model"
STILL = ("(() => { const v = document.querySelector('model-viewer'); v.autoRotate = false; "
         "v.resetTurntableRotation(0); v.jumpCameraToGoal(); })()")  # fmt: skip

# model-viewer compiles a small WebAssembly module (three.js's meshopt decoder) on load.
_CSP = ("default-src 'none'; script-src 'unsafe-inline' 'wasm-unsafe-eval'; "
        "style-src 'unsafe-inline'; img-src data: blob:; media-src data: blob:; "
        "connect-src data: blob:; worker-src blob:")  # fmt: skip


def viewer_js() -> str:
    """The vendored viewer bundle, checked against its recorded sha256, ready to inline."""
    if not VIEWER_JS.is_file():
        raise FileNotFoundError(f"{VIEWER_JS}: the vendored viewer is missing; restore it "
                                "with scripts/vendor_viewer.sh")  # fmt: skip
    data = VIEWER_JS.read_bytes()
    want = VIEWER_SHA256.read_text().split()[0]
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise ValueError(f"{VIEWER_JS}: sha256 {got}, expected {want} ({VIEWER_SHA256.name}); "
                         "restore it with scripts/vendor_viewer.sh")  # fmt: skip
    js = data.decode("utf-8")
    # The source map is not shipped (and would be a request if the developer tools opened).
    js = js.replace("//# sourceMappingURL=model-viewer.min.js.map", "")
    # Inline in <script>, the text must not end the element ("</script"), nor start the
    # "double escaped" state ("<!--" then "<script") in which "</script>" would not end
    # it (HTML's script data states). The pinned bundle has neither; a different one might.
    for bad in ("</script", "<script"):
        if bad in js.lower():
            raise ValueError(f"{VIEWER_JS}: contains {bad!r}, so it cannot be inlined")
    return js


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _fmt(value) -> str:
    """A table cell: floats to 4 significant digits, lists comma-joined, the rest str()."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _rows(info: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings -> (dotted key, cell) rows."""
    rows = []
    for key, value in info.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _rows(value, f"{name}.")
        else:
            rows.append((name, _fmt(value)))
    return rows


def _is_matrix(part: Mapping) -> bool:
    """{row: {column: scalar}} (e.g. metrics: {swd: {value, floor, front, ...}, ...})."""
    return bool(part) and all(
        isinstance(v, Mapping) and v and not any(isinstance(x, Mapping) for x in v.values())
        for v in part.values()
    )


def info_tables(info: Mapping) -> str:
    """info -> HTML tables, every text escaped: the top-level entries whose values are not
    mappings in one table, then one captioned table per mapping: a grid when it maps rows to
    {column: value} (the columns in order of appearance, blank where a row has none), else
    one row per value (nested mappings as dotted keys)."""
    e = html.escape
    plain = {k: v for k, v in info.items() if not isinstance(v, Mapping)}
    sections = [("", plain)] if plain else []
    sections += [(k, v) for k, v in info.items() if isinstance(v, Mapping)]
    out = []
    for title, part in sections:
        caption = f"<caption>{e(str(title))}</caption>" if title else ""
        if _is_matrix(part):
            columns = list(dict.fromkeys(c for row in part.values() for c in row))
            head = "<tr><td></td>" + "".join(f"<th>{e(str(c))}</th>" for c in columns) + "</tr>"
            rows = "".join(
                f"<tr><th>{e(str(name))}</th>"
                + "".join(f"<td>{e(_fmt(row[c])) if c in row else ''}</td>" for c in columns)
                + "</tr>"
                for name, row in part.items()
            )
            rows = head + rows
        else:
            rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _rows(part))
        out.append(f'<table class="info">{caption}{rows}</table>')
    return "\n".join(out)


_STYLE = """
html, body { margin: 0; background: BG; color: #222; font: 14px/1.4 system-ui, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 12px; }
h1 { font-size: 18px; font-weight: 600; margin: 4px 0 10px; }
model-viewer { width: 100%; height: 70vh; min-height: 320px; background-color: BG;
  --poster-color: transparent; }
.pictures { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.pictures figure { margin: 0; }
.pictures img, .pictures video { max-width: 100%; min-height: 256px; image-rendering: pixelated; }
figcaption { font-size: 12px; color: #555; }
.tables { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
table.info { border-collapse: collapse; }
table.info caption { text-align: left; font-weight: 600; padding: 2px 0; }
table.info th, table.info td { text-align: left; padding: 2px 10px 2px 0; vertical-align: top;
  border-bottom: 1px solid #ccc; }
table.info th { font-weight: normal; color: #555; }
#viewer-error { color: #a00; }
""".replace("BG", BACKGROUND)

# Hands the inlined GLB to the viewer and says on <body data-model> when it is shown (or
# not): for people (an error line) and for scripted checks (tests, screenshots).
_LOADER = """
const viewer = document.querySelector("model-viewer");
const fail = (message) => {
  document.body.dataset.model = "FAILED";
  document.getElementById("viewer-error").textContent = "The 3D view failed: " + message;
};
viewer.addEventListener("load", () => { document.body.dataset.model = "LOADED"; });
viewer.addEventListener("error", (e) => fail(String(e.detail && e.detail.type || e.type)));
const text = document.getElementById("avatar-glb").textContent.trim();
const bin = atob(text);
const bytes = new Uint8Array(bin.length);
for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
viewer.src = URL.createObjectURL(new Blob([bytes], { type: "model/gltf-binary" }));
""".replace("FAILED", FAILED).replace("LOADED", LOADED)


def page_html(glb: bytes, turntable: bytes | None = None, turntable_mime: str = "image/gif",
              grid_png: bytes | None = None, info: Mapping | None = None, *,
              title: str = "avatar") -> str:  # fmt: skip
    """One self-contained HTML page: the GLB in an interactive viewer (drag to orbit,
    scroll to zoom, turning by itself until touched; the face, +Z, in front), the
    turntable (`turntable_mime` image/gif or video/mp4) and the grid PNG when given, and
    `info` as tables (see `info_tables`). All text from `info` and `title` is escaped."""
    if not glb[:4] == b"glTF":
        raise ValueError("glb: expected binary glTF (bytes starting with b'glTF')")
    if turntable is not None and turntable_mime not in TURNTABLE_MIMES:
        raise ValueError(f"turntable_mime={turntable_mime!r}: expected one of {TURNTABLE_MIMES}")
    e = html.escape
    pictures = []
    if turntable is not None:
        src = f"data:{turntable_mime};base64,{_b64(turntable)}"
        tag = (f'<img src="{src}" alt="turntable">' if turntable_mime == "image/gif" else
               f'<video src="{src}" autoplay loop muted playsinline></video>')  # fmt: skip
        pictures.append(f"<figure>{tag}<figcaption>turntable (rendered by the generator)"
                        "</figcaption></figure>")  # fmt: skip
    if grid_png is not None:
        pictures.append(f'<figure><img src="data:image/png;base64,{_b64(grid_png)}" '
                        'alt="views"><figcaption>views around the head (rendered by the '
                        "generator)</figcaption></figure>")  # fmt: skip
    tables = info_tables(info or {})
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{_STYLE}</style>
</head>
<body data-model="loading">
<main>
<h1>{e(title)}</h1>
<model-viewer alt="{e(title)}: textured mesh" camera-controls auto-rotate
  camera-orbit="0deg 80deg auto" loading="eager" reveal="auto" interaction-prompt="none"
  environment-image="neutral" shadow-intensity="0.6" exposure="1"><div slot="progress-bar">
  </div></model-viewer>
<p id="viewer-error"></p>
<div class="pictures">{"".join(pictures)}</div>
<div class="tables">{tables}</div>
</main>
<script type="application/octet-stream;base64" id="avatar-glb">{_b64(glb)}</script>
<script type="module">{viewer_js()}</script>
<script type="module">{_LOADER}</script>
</body>
</html>
"""


def write_page(path: str | os.PathLike, glb: bytes, turntable: bytes | None = None,
               turntable_mime: str = "image/gif", grid_png: bytes | None = None,
               info: Mapping | None = None, *, title: str = "avatar") -> Path:  # fmt: skip
    """page_html(...) -> `path` (UTF-8), written atomically."""
    text = page_html(glb, turntable, turntable_mime, grid_png, info, title=title)
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))
