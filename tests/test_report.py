"""gluoncam.report: the HTML report built from a hand-made output folder (index.csv, panels, maps), checked as
parsed HTML and in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium; the
browser tests are skipped, saying why, where those are not installed)."""
import base64
import csv
import importlib.util
import io
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from gluoncam import report

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
THUMB, MAP = 40, 24
WEIRD = 'dogs/c <&> d.jpg'
METHODS = ['gradcam', 'saliency']


def row(image, method, predicted=None, probability='', label='', error='', panel=True, seconds='1.5', status=None):
    """One index row; ``predicted`` is (id, name); an error row has no map (nor panel when ``panel`` is False)."""
    stem = os.path.splitext(image)[0]
    number, name = predicted or ('', '')
    status = status or ('error' if error else 'ok')
    return {'image': image, 'method': method, 'status': status, 'error': error,
            'predicted_class': number, 'predicted_name': name, 'probability': probability,
            'explained_class': number, 'explained_name': name, 'label': label,
            'label_name': {'1': 'cat', '2': 'dog'}.get(label, ''), 'layer': 'features.17', 'seconds': seconds,
            'panel': stem + '.png' if panel else '', 'map': '' if status == 'error' else f'{stem}_{method}.npy',
            'context': 'cpu(0)', 'worker': ''}


KEPT = 'its outputs existed before this run and were kept (pass --overwrite to replace them)'
CAT, DOG = ('1', 'cat'), ('2', 'dog & <wolf>')
ROWS = ([row('cats/a.jpg', m, CAT, '0.9', '1') for m in METHODS]
        + [row('dogs/b.jpg', m, CAT, '0.6', '2') for m in METHODS]
        + [row(WEIRD, m, DOG, '3e-05', '2') for m in METHODS]  # sorts last as text, first as number
        + [row('dogs/broken.jpg', m, label='2', error="cannot read 'broken.jpg' as an image", panel=False,
               seconds='') for m in METHODS]
        + [row('cats/e.jpg', 'gradcam', CAT, '0.75', '1'),
           row('cats/e.jpg', 'saliency', CAT, '0.75', '1', error='saliency failed: <b>NaN</b> & more')]
        + [row('cats/kept.jpg', m, label='1', error=KEPT, status='skipped', seconds='') for m in METHODS])
IMAGES = ['cats/a.jpg', 'dogs/b.jpg', WEIRD, 'dogs/broken.jpg', 'cats/e.jpg', 'cats/kept.jpg']


def write_index(out, rows):
    with open(out / 'index.csv', 'w', newline='', encoding='utf-8') as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_out(out, rows=ROWS, seed=0):
    """The folder a dataset run would leave: index.csv, each row's panel PNG (200 x 100, RGBA) and map."""
    rng = np.random.RandomState(seed)
    for entry in rows:
        if entry['panel'] and not (out / entry['panel']).exists():
            (out / entry['panel']).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.randint(0, 255, (100, 200, 4)).astype(np.uint8), 'RGBA').save(out / entry['panel'])
        if entry['map']:
            shape = (7, 7) if entry['method'] == 'gradcam' else (3, 16, 16)
            np.save(out / entry['map'], rng.randn(*shape).astype(np.float32))
    write_index(out, rows)
    return out


class Page(HTMLParser):
    """The parts of a report the tests read: summary items, body rows (attributes, cell texts, images, links),
    every tag and every attribute value."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.attributes, self.rows, self.summary, self.heads = [], [], [], {}, []
        self.in_body = self.cell = self.dt = self.dd = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.attributes += [(tag, key, value) for key, value in attrs.items()]
        if tag == 'tbody':
            self.in_body = True
        elif tag == 'th':
            self.heads.append(attrs)
        elif tag == 'tr' and self.in_body:
            self.rows.append({'attrs': attrs, 'cells': []})
        elif tag == 'td' and self.in_body:
            self.cell = {'attrs': attrs, 'text': '', 'imgs': [], 'links': []}
            self.rows[-1]['cells'].append(self.cell)
        elif tag == 'img' and self.cell is not None:
            self.cell['imgs'].append(attrs['src'])
        elif tag == 'a' and self.cell is not None:
            self.cell['links'].append(attrs['href'])
        elif tag == 'dt':
            self.dt = ''
        elif tag == 'dd':
            self.dd = ''

    def handle_endtag(self, tag):
        if tag == 'tbody':
            self.in_body = False
        elif tag == 'td':
            self.cell = None
        elif tag == 'dd':
            self.summary[self.dt], self.dt, self.dd = self.dd, None, None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell['text'] += data
        if self.dd is not None:
            self.dd += data
        elif self.dt is not None:
            self.dt += data

    def column(self, key):
        """Each row's cell of the column ``key``."""
        at = [head.get('data-key') for head in self.heads].index(key)
        return [entry['cells'][at] for entry in self.rows]


@pytest.fixture
def built(tmp_path):
    out = make_out(tmp_path / 'out')
    path = report.write_report(str(out), thumb_height=THUMB, map_height=MAP)
    with open(path, encoding='utf-8') as file:
        text = file.read()
    return out, path, text, Page(text)


def decoded(uri):
    assert uri.startswith('data:image/jpeg;base64,'), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri.split(',', 1)[1])))


def test_one_row_per_image_in_index_order(built):
    out, path, text, page = built
    assert path == os.path.join(str(out), 'index.html') and not os.path.exists(path + '.partial')
    assert len(page.rows) == len(IMAGES)
    assert [cell['text'] for cell in page.column('image')] == IMAGES
    assert [cell['text'] for cell in page.column('predicted')] == ['cat (1)', 'cat (1)', 'dog & <wolf> (2)', '',
                                                                  'cat (1)', '']
    assert [cell['attrs']['data-sort'] for cell in page.column('probability')] == ['0.9', '0.6', '3e-05', '', '0.75',
                                                                                   '']
    assert [cell['text'] for cell in page.column('label')] == ['cat (1)', 'dog (2)', 'dog (2)', 'dog (2)', 'cat (1)',
                                                               'cat (1)']
    assert [entry['attrs']['data-mis'] for entry in page.rows] == ['0', '1', '0', '0', '0', '0']
    assert [entry['attrs']['data-status'] for entry in page.rows] == ['ok', 'ok', 'ok', 'error', 'error', 'skipped']
    status = [cell['text'] for cell in page.column('status')]
    assert status[:3] == ['ok'] * 3
    assert status[3] == "error: cannot read 'broken.jpg' as an image"  # once, not once per method
    assert status[4] == 'error: saliency: saliency failed: <b>NaN</b> & more'
    assert status[5] == 'skipped: ' + KEPT


def test_summary_numbers(built):
    summary = built[3].summary
    assert summary['images'] == '6' and summary['ok'] == '3' and summary['errors'].startswith('2 ')
    assert summary['skipped'] == '1'
    assert summary['methods'] == 'gradcam (4 ok, 1 failed, 1 skipped), saliency (3 ok, 2 failed, 1 skipped)'
    assert summary['accuracy'] == '75.0 % of 4 labelled images'  # broken.jpg has a label, no prediction
    assert summary['misclassified'] == '1'
    assert re.sub(r'\s+', ' ', summary['top predicted classes']) == 'cat (1) 3 dog & <wolf> (2) 1'
    assert summary['seconds'] == '6.0 in all, 1.50 per image'


def test_text_of_the_index_is_escaped(built):
    text, page = built[2], built[3]
    assert '<wolf>' not in text and '<b>NaN' not in text and 'c <&> d' not in text
    assert 'c &lt;&amp;&gt; d.jpg' in text and 'dog &amp; &lt;wolf&gt;' in text
    assert not {'wolf', 'b'} & set(page.tags)
    assert [head['data-key'] for head in page.heads][-2:] == ['m:gradcam', 'm:saliency']


def test_self_contained_no_network(built):
    text, page = built[2], built[3]
    assert not re.search(r'https?://|//cdn|@import', text, re.I)
    assert 'link' not in page.tags and page.tags.count('script') == 1
    assert page.tags.count('style') == 2  # the page's, and one in <noscript> that shows the table without script
    for tag, key, value in page.attributes:
        if key == 'src':
            assert tag == 'img' and value.startswith('data:image/jpeg;base64,')
        if key == 'href':
            assert not re.match(r'[a-z]+:|/', value), value  # relative links into the folder only


def test_panel_thumbnails_embedded_and_linked(built):
    out, _, _, page = built
    panels = page.column('panel')
    assert panels[3]['imgs'] == [] and panels[3]['text'] == 'no panel'
    for image, cell in zip(IMAGES, panels):
        if image == 'dogs/broken.jpg':
            continue
        (link,), (uri,) = cell['links'], cell['imgs']
        assert unquote(link) == os.path.splitext(image)[0] + '.png' and (out / unquote(link)).is_file()
        thumbnail = decoded(uri)
        assert thumbnail.format == 'JPEG' and thumbnail.size == (2 * THUMB, THUMB)
    assert panels[2]['links'][0] == 'dogs/c%20%3C%26%3E%20d.png'


def test_method_columns(built):
    out, _, _, page = built
    gradcam, saliency = page.column('m:gradcam'), page.column('m:saliency')
    assert [cell['attrs']['data-sort'] for cell in saliency] == ['ok', 'ok', 'ok', 'error', 'error', 'skipped']
    assert KEPT in saliency[5]['text'] and saliency[5]['links'] == ['cats/kept_saliency.npy']
    assert 'saliency failed: <b>NaN</b> & more' in saliency[4]['text'] and saliency[4]['imgs'] == []
    assert gradcam[4]['links'] == ['cats/e_gradcam.npy'] and saliency[0]['links'] == ['cats/a_saliency.npy']
    assert decoded(gradcam[0]['imgs'][0]).size == (MAP, MAP)
    assert decoded(saliency[0]['imgs'][0]).size == (MAP, MAP)


def test_without_labels_no_misclassified_filter(tmp_path):
    out = make_out(tmp_path, [dict(entry, label='', label_name='') for entry in ROWS])
    path = report.write_report(str(out), title='no <labels>', map_height=0)
    text = open(path, encoding='utf-8').read()
    page = Page(text)
    assert 'id="misclassified"' not in text and 'id="errors"' in text
    assert 'label' not in [head['data-key'] for head in page.heads]
    assert 'accuracy' not in page.summary and 'misclassified' not in page.summary
    assert '<title>no &lt;labels&gt;</title>' in text
    assert all(cell['imgs'] == [] and cell['links'] for cell in page.column('m:gradcam')[:3])


def test_map_picture():
    signed = np.zeros((3, 4, 4))
    signed[0, 0, 0], signed[1, 3, 3] = 1, -1
    picture = report.map_picture(signed)
    assert picture.shape == (4, 4, 3) and picture.dtype == np.uint8
    assert tuple(picture[0, 0]) == (255, 0, 0) and tuple(picture[3, 3]) == (0, 0, 255)
    assert tuple(picture[1, 1]) == (255, 255, 255)
    for constant in (np.zeros((5, 5)), np.full((5, 5), np.nan), np.ones((1, 5, 5))):
        picture = report.map_picture(constant)
        assert picture.shape == (5, 5, 3) and len(np.unique(picture.reshape(-1, 3), axis=0)) == 1


def test_unreadable_files_do_not_stop_the_report(tmp_path):
    out = make_out(tmp_path)
    (out / 'cats/a.png').write_bytes(b'not a png')
    (out / 'cats/a_gradcam.npy').write_bytes(b'not a map')
    with open(out / 'cats/a_saliency.npy', 'wb') as file:
        np.savez(file, values=np.ones(3))  # an .npz archive under a .npy name
    page = Page(open(report.write_report(str(out)), encoding='utf-8').read())
    assert page.column('panel')[0]['text'] == 'panel (no thumbnail)' and page.column('panel')[0]['links']
    assert page.column('m:gradcam')[0]['imgs'] == [] and page.column('m:saliency')[0]['imgs'] == []
    assert page.column('m:gradcam')[0]['links'] == ['cats/a_gradcam.npy']
    assert len(page.column('panel')[1]['imgs']) == 1


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match='index.csv'):
        report.write_report(str(tmp_path))
    (tmp_path / 'index.csv').write_text('image,status\na.jpg,ok\n')
    with pytest.raises(ValueError, match='lacks the column.* method'):
        report.write_report(str(tmp_path))
    with pytest.raises(ValueError, match='quality'):
        report.write_report(str(make_out(tmp_path)), quality=0)


def browser_missing():
    """Why the browser tests cannot run here, or '' if they can."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return 'Chromium and its WebDriver are not installed (Debian: apt-get install chromium chromium-driver)'
    if importlib.util.find_spec('selenium') is None:
        return "selenium is not installed (pip install -e '.[test]')"
    return ''


@pytest.fixture
def browser(tmp_path):
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                     '--window-size=1400,900', f'--user-data-dir={tmp_path / "profile"}'):
        options.add_argument(argument)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver, path):
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get('file://' + os.path.abspath(path))
    WebDriverWait(driver, 30).until(lambda d: d.find_element('tag name', 'body').get_attribute('data-ready') == '1')


def shown_images(driver):
    return driver.execute_script("var at = Array.prototype.map.call(document.querySelectorAll('#images th'),"
                                 "function (h) { return h.getAttribute('data-key'); }).indexOf('image');"
                                 "return Array.prototype.map.call(document.querySelectorAll('#images tbody tr'),"
                                 "function (r) { return r.cells[at].textContent; });")


def test_in_chromium_sort_filter_screenshot(built, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    driver = browser
    open_page(driver, built[1])
    assert shown_images(driver) == IMAGES
    head = driver.find_element('css selector', 'th[data-key="probability"]')
    head.click()
    assert head.get_attribute('aria-sort') == 'ascending'
    assert shown_images(driver) == [WEIRD, 'dogs/b.jpg', 'cats/e.jpg', 'cats/a.jpg', 'dogs/broken.jpg', 'cats/kept.jpg']
    head.click()
    assert head.get_attribute('aria-sort') == 'descending'  # empty probability stays last
    assert shown_images(driver) == ['cats/a.jpg', 'cats/e.jpg', 'dogs/b.jpg', WEIRD, 'dogs/broken.jpg', 'cats/kept.jpg']
    driver.find_element('css selector', 'th[data-key="image"]').click()
    assert shown_images(driver) == sorted(IMAGES, key=str.lower)
    driver.find_element('id', 'misclassified').click()
    assert shown_images(driver) == ['dogs/b.jpg']
    driver.find_element('id', 'misclassified').click()
    driver.find_element('id', 'errors').click()
    assert shown_images(driver) == ['cats/e.jpg', 'dogs/broken.jpg']
    driver.find_element('id', 'errors').click()
    driver.find_element('id', 'search').send_keys('WOLF')
    assert shown_images(driver) == [WEIRD]
    assert 'sort=image' in driver.current_url and 'q=WOLF' in driver.current_url
    driver.find_element('id', 'search').send_keys(*[Keys.BACKSPACE] * 4)
    driver.find_element('css selector', 'th[data-key="probability"]').click()
    assert len(shown_images(driver)) == len(IMAGES)
    shot = tmp_path / 'report.png'
    assert driver.save_screenshot(str(shot))
    picture = np.asarray(Image.open(shot).convert('RGB'))
    assert shot.stat().st_size > 20000 and picture.shape[1] == 1400 and picture.shape[0] > 500 and picture.std() > 20
    severe = [entry for entry in driver.get_log('browser') if entry['level'] == 'SEVERE']
    assert severe == []


def test_in_chromium_10000_images_stay_usable(tmp_path, browser):
    rng = np.random.RandomState(3)
    ramp = np.linspace(0, 255, 120)[None, :, None] * np.linspace(0.2, 1, 40)[:, None, None] * [1, 0.5, 0.2]
    Image.fromarray(np.uint8(ramp)).save(tmp_path / 'panel.png')  # smooth, as photos and maps are
    probabilities = rng.rand(10000)
    rows = [dict(row(f'class{k % 7}/img{k:05d}.jpg', 'gradcam', (str(k % 5), f'c{k % 5}'), repr(p), str(k % 7)),
                 panel='panel.png', map='') for k, p in enumerate(probabilities)]
    write_index(tmp_path, rows)
    started = time.perf_counter()
    path = report.write_report(str(tmp_path), thumb_height=40)
    written = time.perf_counter() - started
    started = time.perf_counter()
    open_page(browser, path)
    loaded = time.perf_counter() - started
    assert browser.execute_script("return document.querySelectorAll('#images tbody tr').length") == 100
    browser.find_element('id', 'next').click()
    assert browser.find_element('id', 'page').text == 'page 2 of 100'
    assert browser.execute_script("return document.querySelector('#images tbody td').textContent") == '101'
    started = time.perf_counter()
    browser.find_element('css selector', 'th[data-key="probability"]').click()
    browser.find_element('css selector', 'th[data-key="probability"]').click()
    sorted_in = time.perf_counter() - started
    top = browser.execute_script("return document.querySelector('#images tbody tr td.num:nth-of-type(5)')"
                                 ".getAttribute('data-sort')")
    assert float(top) == probabilities.max()
    assert '10000 images' in browser.find_element('id', 'shown').text
    print(f'10,000 images: written in {written:.1f} s ({os.path.getsize(path) / 1e6:.1f} MB), '
          f'loaded in {loaded:.1f} s, sorted twice in {sorted_in:.2f} s')
    assert loaded < 30 and sorted_in < 5


def test_chromium_command_line_dump_dom(built, tmp_path):
    """Without WebDriver: Chromium's --dump-dom of the page opened with a sort and a filter in its address."""
    if not os.path.exists(CHROMIUM):
        pytest.skip('Chromium is not installed (Debian: apt-get install chromium)')
    base = 'file://' + os.path.abspath(built[1])

    def dom(fragment):
        done = subprocess.run([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                               f'--user-data-dir={tmp_path / "profile"}', '--dump-dom', base + fragment],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return Page(done.stdout)

    page = dom('#sort=probability&dir=desc')
    assert [cell['text'] for cell in page.column('image')] == ['cats/a.jpg', 'cats/e.jpg', 'dogs/b.jpg', WEIRD,
                                                               'dogs/broken.jpg', 'cats/kept.jpg']
    assert [cell['text'] for cell in dom('#mis=1').column('image')] == ['dogs/b.jpg']
