"""The HTML report of a dataset run, ``OUT/index.html``, built from ``OUT/index.csv`` and the files it names.

The page is self-contained and works offline from the output folder: CSS and JavaScript are inline (no CDN, no
network), each image's panel is embedded as a small base64 JPEG thumbnail that links to the full panel by its
path relative to ``OUT``, and each method's raw map is embedded as a tiny colour-mapped thumbnail that links to
its ``.npy`` file. It has a summary (images, ok and error counts, methods, accuracy and the number misclassified
when labels are known, the most predicted classes), a table of every image that sorts by any column (numeric
columns numerically), per-method columns (the map and that method's status), and filters: a text search,
'misclassified only' (when labels are known) and 'errors only'. The table shows one page of rows at a time, so
10,000 images stay responsive; without JavaScript every row is shown, unsorted. Sort, filters and page are kept
in the address's ``#`` part (e.g. ``index.html#sort=probability&dir=desc&mis=1``), so a view can be bookmarked.
"""
import base64
import csv
import html
import io
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np

REQUIRED_COLUMNS = ('image', 'method', 'status')
INDEX_COLUMNS = ('image', 'method', 'status', 'error', 'predicted_class', 'predicted_name', 'probability',
                 'explained_class', 'explained_name', 'label', 'label_name', 'layer', 'seconds', 'panel', 'map',
                 'context', 'worker')
TOP_CLASSES = 10


@dataclass
class ImageResult:
    """One image of the index: its rows by method (the last row wins when a method is listed twice). Read its
    properties only once all its rows are in (they are computed once)."""
    image: str
    by_method: Dict[str, Dict[str, str]] = field(default_factory=dict)

    @cached_property
    def main(self) -> Dict[str, str]:
        """The row the image's own fields (prediction, label, panel, ...) are read from: its first ok row."""
        rows = list(self.by_method.values())
        return next((row for row in rows if status_of(row) == 'ok'), rows[0])

    @cached_property
    def notes(self) -> Dict[str, str]:
        """The message of each method whose status is not 'ok' (an error, or e.g. 'skipped': outputs kept)."""
        return {method: (row.get('error') or '').strip() or status_of(row) for method, row in self.by_method.items()
                if status_of(row) != 'ok'}

    @cached_property
    def status(self) -> str:
        """'ok' if every method is; else 'error' if any method failed; else the other status (e.g. 'skipped')."""
        statuses = [status_of(row) for row in self.by_method.values()]
        if 'error' in statuses:
            return 'error'
        return next((status for status in statuses if status != 'ok'), 'ok')

    @property
    def ok(self) -> bool:
        return self.status == 'ok'

    @property
    def message(self) -> str:
        """The notes in one line: the message once if every method says the same, else per method."""
        notes = self.notes
        if len(set(notes.values())) == 1 and len(notes) == len(self.by_method):
            return next(iter(notes.values()))
        return '; '.join(f'{method}: {message}' for method, message in notes.items())

    def value(self, column: str) -> str:
        return (self.main.get(column) or '').strip()

    @property
    def labelled(self) -> bool:
        return bool(self.value('label'))

    @property
    def misclassified(self) -> bool:
        """A known label that differs from a known prediction."""
        predicted, label = self.value('predicted_class'), self.value('label')
        return bool(predicted and label) and not same_class(predicted, label)


def status_of(row: Dict[str, str]) -> str:
    """A row's status, lower case: 'ok', 'error', or what else the index says (e.g. 'skipped'); empty is 'error'."""
    return (row.get('status') or '').strip().lower() or 'error'


def same_class(a: str, b: str) -> bool:
    """Whether two class ids of the index are equal (as integers when both are, e.g. '3' and '3.0')."""
    try:
        return int(float(a)) == int(float(b))
    except ValueError:
        return a == b


def read_index(out_dir: str) -> Tuple[List[ImageResult], List[str]]:
    """The images of ``OUT/index.csv`` in the order they first appear, and the methods in the same order.

    Raises
    ------
    FileNotFoundError
        No index.csv in ``out_dir``.
    ValueError
        A column the report needs (image, method, status) is missing.
    """
    path = os.path.join(out_dir, 'index.csv')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no index of results at {path!r}: the report is built from the index.csv that "
                                f"'gluoncam explain' writes in its output folder")
    with open(path, newline='', encoding='utf-8-sig') as file:
        reader = csv.DictReader(file)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path!r} lacks the column(s) {', '.join(missing)}; an index has the columns "
                             f"{', '.join(INDEX_COLUMNS)}")
        images: Dict[str, ImageResult] = {}
        methods: Dict[str, None] = {}
        for row in reader:
            row = {key: (value or '') for key, value in row.items() if key is not None}
            method = row['method'].strip()
            methods.setdefault(method, None)
            images.setdefault(row['image'], ImageResult(row['image'])).by_method[method] = row
    return list(images.values()), list(methods)


def to_float(text: str) -> Optional[float]:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def data_uri(jpeg: bytes) -> str:
    return 'data:image/jpeg;base64,' + base64.b64encode(jpeg).decode('ascii')


def local_file(out_dir: str, relative: str) -> Optional[str]:
    """The file a path of the index names (relative to ``out_dir``), or None if it names nothing there."""
    if not relative:
        return None
    path = os.path.join(out_dir, relative)
    return path if os.path.isfile(path) else None


def panel_thumbnail(path: str, height: int, quality: int, max_width: int) -> Optional[str]:
    """The panel PNG at ``path`` as a JPEG data URI ``height`` pixels high (width in proportion, at most
    ``max_width``), transparency over white; None if it cannot be read."""
    from PIL import Image
    try:
        with Image.open(path) as opened:
            opened.thumbnail((max_width, height), Image.Resampling.LANCZOS)
            picture = opened.convert('RGBA')
    except (OSError, ValueError, EOFError, Image.DecompressionBombError):  # not a picture PIL can read
        return None
    flat = Image.new('RGB', picture.size, 'white')
    flat.paste(picture, mask=picture.getchannel('A'))
    buffer = io.BytesIO()
    flat.save(buffer, 'JPEG', quality=quality, optimize=True)
    return data_uri(buffer.getvalue())


def map_picture(values: np.ndarray) -> np.ndarray:
    """A raw map (h x w, or C x H x W / H x W x C with C <= 4, channels summed) as an RGB uint8 picture: jet
    from 0 to the 99th percentile of the values for a non-negative map, blue-white-red for a signed one, from
    minus to plus the 99th percentile of the magnitudes (larger values clipped, as captum's visualization clips
    outliers, so that a few extreme gradients do not wash the thumbnail out). Constant maps are a flat colour,
    never NaN."""
    values = np.nan_to_num(np.squeeze(np.asarray(values, dtype=np.float64)), nan=0.0, posinf=0.0, neginf=0.0)
    if values.ndim == 3:
        values = values.sum(axis=0 if values.shape[0] <= 4 or values.shape[0] < values.shape[-1] else -1)
    while values.ndim > 2:
        values = values.mean(axis=0)
    values = np.atleast_2d(values)
    top = max(float(np.percentile(np.abs(values), 99)), float(np.abs(values).max()) * 1e-3, 1e-12)
    if values.min() < 0:
        scaled = np.clip(values / top, -1, 1)
        red, blue = 1 - np.clip(-scaled, 0, 1), 1 - np.clip(scaled, 0, 1)
        green = 1 - np.abs(scaled)
        return np.uint8(np.round(np.stack([red, green, blue], axis=-1) * 255))
    import cv2
    gray = np.uint8(np.round(np.clip(values / top, 0, 1) * 255))
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def map_thumbnail(path: str, height: int, quality: int) -> Optional[str]:
    """The raw map saved at ``path`` (.npy) as a JPEG data URI ``height`` pixels high; None if it cannot be read."""
    import cv2
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # not a .npy file (or a truncated one)
        return None
    if not isinstance(values, np.ndarray) or values.size == 0 or not np.issubdtype(values.dtype, np.number):
        return None  # e.g. an .npz archive, or a map of strings
    picture = map_picture(values)
    width = max(1, min(4 * height, round(picture.shape[1] * height / picture.shape[0])))
    small = picture.shape[0] < height
    picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_NEAREST if small else cv2.INTER_AREA)
    done, jpeg = cv2.imencode('.jpg', cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data_uri(jpeg.tobytes()) if done else None


def thumbnails(out_dir: str, images: Sequence[ImageResult], thumb_height: int, map_height: int, quality: int,
               workers: int) -> Tuple[List[Optional[str]], List[Dict[str, Optional[str]]]]:
    """Each image's panel thumbnail and the thumbnail of each method's map (none when ``map_height`` is 0),
    made on ``workers`` threads (PIL and OpenCV release the GIL while they decode, resize and encode)."""
    def panel_of(result: ImageResult) -> Optional[str]:
        path = local_file(out_dir, result.value('panel'))
        return panel_thumbnail(path, thumb_height, quality, 6 * thumb_height) if path else None

    def maps_of(result: ImageResult) -> Dict[str, Optional[str]]:
        paths = {method: local_file(out_dir, (row.get('map') or '').strip())
                 for method, row in result.by_method.items()}
        return {method: map_thumbnail(path, map_height, quality) if path and map_height else None
                for method, path in paths.items()}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        panels = list(pool.map(panel_of, images))
        maps = list(pool.map(maps_of, images))
    return panels, maps


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def href(relative: str) -> str:
    """A relative link to a file of the output folder: percent-encoded ('#', '?', ':' and the like cannot change
    what it points at), then escaped for an attribute."""
    return esc(quote(relative.replace(os.sep, '/'), safe='/'))


def class_text(result: ImageResult, prefix: str) -> str:
    """'name (id)' of the predicted, explained or label class; what is known of it; '' if nothing is."""
    number, name = result.value(f'{prefix}_class' if prefix != 'label' else 'label'), result.value(f'{prefix}_name')
    if name and number:
        return f'{name} ({number})'
    return name or number


def summary(images: Sequence[ImageResult], methods: Sequence[str]) -> Dict[str, object]:
    """The numbers at the top of the page (see ``write_report``)."""
    labelled = [result for result in images if result.labelled and result.value('predicted_class')]
    wrong = sum(result.misclassified for result in labelled)
    predicted = Counter(class_text(result, 'predicted') for result in images if result.value('predicted_class'))
    runs = Counter((method, status_of(row)) for result in images for method, row in result.by_method.items())
    statuses = Counter(result.status for result in images)
    seconds = [to_float(result.value('seconds')) for result in images]
    seconds = [value for value in seconds if value is not None]
    return {'images': len(images), 'ok': statuses.pop('ok', 0), 'errors': statuses.pop('error', 0),
            'other': dict(sorted(statuses.items())),
            'methods': {method: {status: count for (name, status), count in runs.items() if name == method}
                        for method in methods},
            'labelled': len(labelled), 'misclassified': wrong, 'labels': any(result.labelled for result in images),
            'accuracy': (len(labelled) - wrong) / len(labelled) if labelled else None,
            'top_classes': predicted.most_common(TOP_CLASSES),
            'layers': sorted({row.get('layer', '').strip() for result in images for row in result.by_method.values()}
                             - {''}),
            'seconds': (sum(seconds), sum(seconds) / len(seconds)) if seconds else None,
            'places': sorted({place(result) for result in images} - {''})}


def method_counts(counts: Dict[str, int]) -> str:
    """'3 ok, 1 failed, 2 skipped'."""
    ordered = sorted(counts.items(), key=lambda item: ({'ok': 0, 'error': 1}.get(item[0], 2), item[0]))
    return ', '.join(f'{count:,} {"failed" if status == "error" else esc(status)}' for status, count in ordered)


def place(result: ImageResult) -> str:
    """Where the image was explained: its context, and the Dask worker if any."""
    context, worker = result.value('context'), result.value('worker')
    return f'{context} @ {worker}' if context and worker else context or worker


def summary_html(numbers: Dict[str, object]) -> str:
    items = [('images', f"{numbers['images']:,}"), ('ok', f"{numbers['ok']:,}"),
             ('errors', f"{numbers['errors']:,}" + (' (images where a method failed)' if numbers['errors'] else ''))]
    items += [(status, f'{count:,}') for status, count in numbers['other'].items()]
    items.append(('methods', ', '.join(f'{esc(method)} ({method_counts(counts)})'
                                       for method, counts in numbers['methods'].items()) or 'none'))
    if numbers['accuracy'] is not None:
        items.append(('accuracy', f"{100 * numbers['accuracy']:.1f} % of {numbers['labelled']:,} labelled images"))
        items.append(('misclassified', f"{numbers['misclassified']:,}"))
    elif numbers['labels']:
        items.append(('accuracy', 'none: no labelled image has a prediction'))
    else:
        items.append(('labels', 'unknown (no class folders or labels CSV): no accuracy'))
    if numbers['top_classes']:
        buttons = ' '.join(f'<button type="button" class="q" data-q="{esc(name)}">{esc(name)}</button>&nbsp;{count:,}'
                           for name, count in numbers['top_classes'])
        items.append(('top predicted classes', buttons))
    if numbers['layers']:
        items.append(('layers', esc(', '.join(numbers['layers']))))
    if numbers['seconds']:
        total, mean = numbers['seconds']
        items.append(('seconds', f'{total:,.1f} in all, {mean:.2f} per image'))
    if len(numbers['places']) > 1:
        items.append(('devices', esc(', '.join(numbers['places']))))
    rows = ''.join(f'<div class="item" data-name="{esc(name)}"><dt>{esc(name)}</dt><dd>{value}</dd></div>'
                   for name, value in items)
    return f'<dl id="summary">{rows}</dl>'


@dataclass
class Column:
    key: str
    header: str
    numeric: bool = False
    sortable: bool = True


def columns_for(methods: Sequence[str], labels: bool, places: bool) -> List[Column]:
    columns = [Column('row', '#', numeric=True), Column('panel', 'panel', sortable=False), Column('image', 'image'),
               Column('predicted', 'prediction'), Column('probability', 'probability', numeric=True),
               Column('explained', 'explained class')]
    columns += [Column('label', 'label')] if labels else []
    columns += [Column('seconds', 'seconds', numeric=True)]
    columns += [Column('place', 'device')] if places else []
    columns += [Column('status', 'status')]
    return columns + [Column('m:' + method, method) for method in methods]


def header_html(columns: Sequence[Column]) -> str:
    cells = ''.join(f'<th data-key="{esc(column.key)}" data-type="{"num" if column.numeric else "text"}"'
                    + (' tabindex="0" class="sortable"' if column.sortable else '') + f'>{esc(column.header)}</th>'
                    for column in columns)
    return f'<thead><tr>{cells}</tr></thead>'


def number_cell(text: str, digits: int) -> str:
    value = to_float(text)
    if value is None:
        return '<td class="num" data-sort=""></td>'
    shown = f'{value:.1e}' if 0 < abs(value) < 10 ** -digits else f'{value:.{digits}f}'
    return f'<td class="num" data-sort="{value!r}">{shown}</td>'


def panel_cell(result: ImageResult, thumbnail: Optional[str], out_dir: str) -> str:
    relative = result.value('panel')
    if not local_file(out_dir, relative):
        return '<td class="panel missing">no panel</td>'
    inner = (f'<img loading="lazy" src="{thumbnail}" alt="panel of {esc(result.image)}">' if thumbnail
             else 'panel (no thumbnail)')
    return f'<td class="panel"><a href="{href(relative)}" target="_blank">{inner}</a></td>'


def method_cell(method: str, row: Optional[Dict[str, str]], thumbnail: Optional[str], out_dir: str) -> str:
    if row is None:
        return '<td class="method absent" data-sort="~">not run</td>'
    status = status_of(row)
    relative = (row.get('map') or '').strip()
    link = ''
    if local_file(out_dir, relative):
        inner = f'<img class="map" loading="lazy" src="{thumbnail}" alt="{esc(method)} map">' if thumbnail else 'map'
        link = f'<a href="{href(relative)}" title="{esc(relative)}">{inner}</a> '
    kind = css_class(status)
    message = '' if status == 'ok' else f'<div class="{kind} note">{esc((row.get("error") or "").strip())}</div>'
    return (f'<td class="method {kind}" data-sort="{esc(status)}">{link}<span class="badge {kind}">{esc(status)}'
            f'</span>{message}</td>')


def css_class(status: str) -> str:
    """A status as a CSS class name: 'ok', 'error', or 'other' (whatever else the index says)."""
    return status if status in ('ok', 'error') else 'other'


def row_html(number: int, result: ImageResult, columns: Sequence[Column], panel: Optional[str],
             maps: Dict[str, Optional[str]], out_dir: str) -> str:
    cells = []
    for column in columns:
        key = column.key
        if key == 'row':
            cells.append(f'<td class="num" data-sort="{number}">{number}</td>')
        elif key == 'panel':
            cells.append(panel_cell(result, panel, out_dir))
        elif key == 'image':
            cells.append(f'<td class="image">{esc(result.image)}</td>')
        elif key in ('predicted', 'explained', 'label'):
            wrong = ' class="wrong"' if key == 'label' and result.misclassified else ''
            cells.append(f'<td{wrong}>{esc(class_text(result, key))}</td>')
        elif key == 'probability':
            cells.append(number_cell(result.value('probability'), 3))
        elif key == 'seconds':
            cells.append(number_cell(result.value('seconds'), 2))
        elif key == 'place':
            cells.append(f'<td>{esc(place(result))}</td>')
        elif key == 'status':
            text = 'ok' if result.ok else f'{result.status}: {result.message}'
            cells.append(f'<td class="status {css_class(result.status)}">{esc(text)}</td>')
        else:
            method = key[2:]
            cells.append(method_cell(method, result.by_method.get(method), maps.get(method), out_dir))
    return (f'<tr data-status="{esc(result.status)}" data-mis="{int(result.misclassified)}"'
            + (' class="mis"' if result.misclassified else '') + f'>{"".join(cells)}</tr>\n')


def controls_html(labels: bool, page_size: int) -> str:
    sizes = sorted({25, 100, 500, page_size} - {0})
    options = ''.join(f'<option value="{size}"{" selected" if size == page_size else ""}>{size}</option>'
                      for size in sizes) + f'<option value="0"{" selected" if page_size == 0 else ""}>all</option>'
    misclassified = ('<label id="mis-label"><input type="checkbox" id="misclassified"> misclassified only</label>'
                     if labels else '')
    return (f'<div id="controls"><input type="search" id="search" placeholder="search images, classes, errors" '
            f'aria-label="search">{misclassified}'
            f'<label><input type="checkbox" id="errors"> errors only</label>'
            f'<label>rows per page <select id="page-size">{options}</select></label>'
            f'<button type="button" id="previous">&larr;</button><span id="page"></span>'
            f'<button type="button" id="next">&rarr;</button><span id="shown"></span></div>')


STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1em 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .5em; }
#summary { display: flex; flex-wrap: wrap; gap: .4em 2em; margin: 0 0 1em; }
#summary .item { display: flex; gap: .5em; }
#summary dt { font-weight: 600; } #summary dd { margin: 0; }
#summary button.q { border: 1px solid #bbb; border-radius: 3px; background: #f6f6f6; cursor: pointer; }
#controls { position: sticky; top: 0; background: #fff; padding: .5em 0; display: flex; flex-wrap: wrap;
  gap: .5em 1em; align-items: center; z-index: 2; border-bottom: 1px solid #ddd; }
#search { width: 18em; }
table { border-collapse: collapse; }
#images.pending { display: none; }  /* until the script shows one page: 10,000 rows lay out slowly */
th, td { border-bottom: 1px solid #e4e4e4; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; position: sticky; top: 0; z-index: 1; white-space: nowrap; }
th.sortable { cursor: pointer; }
th[aria-sort=ascending]::after { content: ' \\25B2'; } th[aria-sort=descending]::after { content: ' \\25BC'; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.panel img, img.map { display: block; }
td.image { min-width: 10em; max-width: 22em; overflow-wrap: anywhere; }
tr.mis { background: #fff4e0; } td.wrong { color: #b00; font-weight: 600; }
td.status.error, .note.error { color: #b00; } td.status.other, .note.other { color: #666; }
.note { font-size: .85em; max-width: 20em; overflow-wrap: anywhere; }
.badge { font-size: .8em; padding: 0 4px; border-radius: 3px; }
.badge.ok { background: #e3f4e3; } .badge.error { background: #fde0e0; } .badge.other { background: #eee; }
"""

SCRIPT = """
(function () {
  'use strict';
  var table = document.getElementById('images'), body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var texts = rows.map(function (row) { return row.textContent.toLowerCase(); });
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var search = document.getElementById('search'), misclassified = document.getElementById('misclassified');
  var errors = document.getElementById('errors'), pageSize = document.getElementById('page-size');
  var state = {sort: '', dir: 'asc', q: '', mis: false, err: false, size: parseInt(pageSize.value, 10), page: 1};
  var keys = {}, order = rows.map(function (row, i) { return i; });
  var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: 'base'});

  function columnKeys(column) {
    if (keys[column]) { return keys[column]; }
    var numeric = heads[column].getAttribute('data-type') === 'num';
    keys[column] = rows.map(function (row) {
      var cell = row.cells[column], text = cell.getAttribute('data-sort');
      if (text === null) { text = cell.textContent; }
      if (numeric) { var value = parseFloat(text); return isNaN(value) ? null : value; }
      return text === '' ? null : text;
    });
    return keys[column];
  }
  function sortOrder() {
    order = rows.map(function (row, i) { return i; });
    var column = heads.findIndex(function (head) { return head.getAttribute('data-key') === state.sort; });
    if (column < 0) { return; }
    var values = columnKeys(column), sign = state.dir === 'desc' ? -1 : 1;
    var numeric = heads[column].getAttribute('data-type') === 'num';
    order.sort(function (a, b) {
      var x = values[a], y = values[b];
      if (x === null || y === null) { return x === y ? a - b : (x === null ? 1 : -1); }
      var c = numeric ? (x < y ? -1 : x > y ? 1 : 0) : collator.compare(x, y);
      return c ? sign * c : a - b;
    });
  }
  function visible() {
    var q = state.q.toLowerCase();
    return order.filter(function (i) {
      var row = rows[i];
      return (!state.mis || row.getAttribute('data-mis') === '1')
        && (!state.err || row.getAttribute('data-status') === 'error')
        && (!q || texts[i].indexOf(q) >= 0);
    });
  }
  function render() {
    var shown = visible(), size = state.size > 0 ? state.size : Math.max(shown.length, 1);
    var pages = Math.max(1, Math.ceil(shown.length / size));
    state.page = Math.min(Math.max(1, state.page), pages);
    var first = (state.page - 1) * size, part = shown.slice(first, first + size);
    var fragment = document.createDocumentFragment();
    part.forEach(function (i) { fragment.appendChild(rows[i]); });
    body.textContent = '';
    body.appendChild(fragment);
    heads.forEach(function (head) {
      if (head.getAttribute('data-key') === state.sort) {
        head.setAttribute('aria-sort', state.dir === 'desc' ? 'descending' : 'ascending');
      } else { head.removeAttribute('aria-sort'); }
    });
    document.getElementById('page').textContent = 'page ' + state.page + ' of ' + pages;
    document.getElementById('shown').textContent = shown.length
      ? 'rows ' + (first + 1) + '\\u2013' + (first + part.length) + ' of ' + shown.length + ' shown ('
        + rows.length + ' images)'
      : 'no image matches (' + rows.length + ' images)';
    document.getElementById('previous').disabled = state.page <= 1;
    document.getElementById('next').disabled = state.page >= pages;
    saveState();
  }
  function saveState() {
    var parts = [];
    if (state.sort) { parts.push('sort=' + encodeURIComponent(state.sort), 'dir=' + state.dir); }
    if (state.q) { parts.push('q=' + encodeURIComponent(state.q)); }
    if (state.mis) { parts.push('mis=1'); }
    if (state.err) { parts.push('err=1'); }
    if (state.page > 1) { parts.push('page=' + state.page); }
    try { history.replaceState(null, '', '#' + parts.join('&')); } catch (e) { /* file: pages may refuse */ }
  }
  function loadState() {
    var found = {};
    location.hash.slice(1).split('&').forEach(function (part) {
      var at = part.indexOf('=');
      if (at > 0) { found[part.slice(0, at)] = decodeURIComponent(part.slice(at + 1)); }
    });
    state.sort = found.sort || '';
    state.dir = found.dir === 'desc' ? 'desc' : 'asc';
    state.q = found.q || '';
    state.mis = found.mis === '1' && !!misclassified;
    state.err = found.err === '1';
    state.page = parseInt(found.page, 10) || 1;
    search.value = state.q;
    if (misclassified) { misclassified.checked = state.mis; }
    errors.checked = state.err;
  }
  function sortBy(head) {
    var key = head.getAttribute('data-key');
    state.dir = state.sort === key && state.dir === 'asc' ? 'desc' : 'asc';
    state.sort = key;
    state.page = 1;
    sortOrder();
    render();
  }
  heads.forEach(function (head) {
    if (!head.classList.contains('sortable')) { return; }
    head.addEventListener('click', function () { sortBy(head); });
    head.addEventListener('keydown', function (event) {
      if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); sortBy(head); }
    });
  });
  search.addEventListener('input', function () { state.q = search.value; state.page = 1; render(); });
  if (misclassified) {
    misclassified.addEventListener('change', function () {
      state.mis = misclassified.checked; state.page = 1; render();
    });
  }
  errors.addEventListener('change', function () { state.err = errors.checked; state.page = 1; render(); });
  pageSize.addEventListener('change', function () {
    state.size = parseInt(pageSize.value, 10); state.page = 1; render();
  });
  document.getElementById('previous').addEventListener('click', function () { state.page -= 1; render(); });
  document.getElementById('next').addEventListener('click', function () { state.page += 1; render(); });
  Array.prototype.forEach.call(document.querySelectorAll('button.q'), function (button) {
    button.addEventListener('click', function () {
      search.value = state.q = button.getAttribute('data-q'); state.page = 1; render();
    });
  });
  function stickHeads() {
    var height = document.getElementById('controls').offsetHeight;
    heads.forEach(function (head) { head.style.top = height + 'px'; });
  }
  try {
    loadState();
    sortOrder();
    render();
  } finally {
    table.classList.remove('pending');  // whatever happened, never leave the table hidden
  }
  window.addEventListener('resize', stickHeads);
  stickHeads();  // after render: measuring the controls lays out only one page of rows
  document.body.setAttribute('data-ready', '1');
})();
"""


def page_html(title: str, numbers: Dict[str, object], columns: Sequence[Column], rows: str, labels: bool,
              page_size: int) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><style>{STYLE}</style>'
            f'<noscript><style>#images.pending {{ display: table; }}</style></noscript>'
            f'</head>\n<body>\n<h1>{esc(title)}</h1>\n'
            f'{summary_html(numbers)}\n{controls_html(labels, page_size)}\n'
            f'<table id="images" class="pending">{header_html(columns)}<tbody>\n{rows}</tbody></table>\n'
            f'<p class="footer">Made by gluoncam.report from index.csv; panels and maps link to the files of '
            f'this folder.</p>\n<script>{SCRIPT}</script>\n</body></html>\n')


def write_report(out_dir: str, title: Optional[str] = None, thumb_height: int = 160, map_height: int = 48,
                 quality: int = 70, page_size: int = 100, workers: Optional[int] = None) -> str:
    """Write ``out_dir/index.html``, the report of a dataset run, from ``out_dir/index.csv``; return its path.

    The page is self-contained (inline CSS and JavaScript, thumbnails embedded as base64 JPEG; nothing is fetched
    from the network) and opens offline from the folder: each thumbnail links to its full panel, each map
    thumbnail to its ``.npy`` file, by their paths relative to ``out_dir``. It shows

    - a summary: images, ok and error counts (an image is an error if any method failed on it; other statuses,
      e.g. 'skipped' for outputs kept from an earlier run, are counted apart), the methods with their ok / failed
      / other counts, accuracy and the number misclassified when labels are known, the ten most
      predicted classes (a click searches for one), layers, seconds, and the devices when there were several;
    - a table of every image, one row each: thumbnail of the panel, image path, prediction and probability,
      explained class, label (when known; misclassified rows highlighted), seconds, status and error, then one
      column per method with a thumbnail of its raw map (jet for non-negative maps, blue-white-red for signed
      ones, channels summed) and that method's status and error;
    - headers that sort on click (numeric columns numerically, empty cells last; a second click reverses),
      a text search, 'misclassified only' (only when labels are known), 'errors only', and pages of
      ``page_size`` rows (0: all) so that a table of 10,000 images stays responsive (the table stays hidden
      until the script has put one page in, and thumbnails load lazily, so the browser never lays out or
      decodes all rows; without JavaScript every row is shown, unsorted).

    Size: per image, its panel thumbnail (base64 JPEG: about 20 KB for a four-panel 1280 x 312 panel at 160 px
    high and quality 70, i.e. 656 x 160), about 1.3 to 2 KB per method's map thumbnail at 48 px, and about
    1.2 KB of markup: about 26 KB per image with three methods, so 10,000 images make a page of about 260 MB.
    Measured here (2 busy cores, headless Chromium) on such a page: about 20 s to open, then sorting 10,000 rows
    takes under 1 s and a page of rows about 0.5 s. ``thumb_height=96`` gives less than half the panel bytes
    (about 8.5 KB); ``map_height=0`` leaves the map thumbnails out (their links stay).

    Parameters
    ----------
    out_dir
        The output folder of ``gluoncam explain`` (holding index.csv; see the results index of issue 13).
    title
        The page's title; default 'gluoncam report: <folder name>'.
    thumb_height, map_height
        Heights in pixels of the panel and map thumbnails (panel thumbnails at most 6 x as wide as high).
    quality
        JPEG quality of the thumbnails, 1 to 95.
    page_size
        Rows shown at a time (25, 100, 500 or all can be chosen on the page); 0 shows all.
    workers
        Threads that make thumbnails; default min(8, CPU count).

    Returns
    -------
    str
        The path of the written page. It is written to a temporary file first, then renamed.

    Raises
    ------
    FileNotFoundError
        ``out_dir`` has no index.csv.
    ValueError
        A bad size or quality, or an index without the image, method and status columns.
    """
    if thumb_height < 1 or map_height < 0 or not 1 <= quality <= 95 or page_size < 0:
        raise ValueError(f"thumb_height must be >= 1, map_height >= 0, quality 1 to 95 and page_size >= 0; got "
                         f"{thumb_height}, {map_height}, {quality} and {page_size}")
    images, methods = read_index(out_dir)
    numbers = summary(images, methods)
    labels = numbers['labels']
    columns = columns_for(methods, labels, len(numbers['places']) > 1)
    panels, maps = thumbnails(out_dir, images, thumb_height, map_height, quality,
                              workers or min(8, os.cpu_count() or 1))
    rows = ''.join(row_html(number, result, columns, panel, own_maps, out_dir)
                   for number, (result, panel, own_maps) in enumerate(zip(images, panels, maps), start=1))
    title = title or f'gluoncam report: {os.path.basename(os.path.abspath(out_dir))}'
    path = os.path.join(out_dir, 'index.html')
    partial = path + '.partial'
    with open(partial, 'w', encoding='utf-8') as file:
        file.write(page_html(title, numbers, columns, rows, labels, page_size))
    os.replace(partial, path)
    return path
