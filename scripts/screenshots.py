"""Screenshot every page of the web shell in the Debian Chromium, as each kind of user sees it.

    make screenshots          # writes docs/screenshots/*.png

Starts a demo server on a free port with a throw-away database, signs in as several demo users, and
captures each page in Chinese (and the login page in English too).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from tianfu.demo import DEMO_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("TIANFU_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(var_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = os.environ | {
        "TIANFU_DEMO": "1",
        "TIANFU_VAR_DIR": var_dir,
        "TIANFU_PORT": str(port),
        "TIANFU_HL7_PORT": str(free_port()),  # the demo feed plays the ward's monitors into it
        "TIANFU_DATABASE_URL": f"sqlite:///{var_dir}/tianfu.db",
    }
    tianfu = str(Path(sys.executable).parent / "tianfu")
    subprocess.run([tianfu, "demo"], env=env, check=True, capture_output=True)
    server = subprocess.Popen(
        [tianfu, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)  # noqa: S310 - our own local server
            return server, base
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("server did not start")


def sign_in(page: Page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def shoot(page: Page, base: str, path: str, name: str) -> None:
    page.goto(base + path)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(400)  # charts animate in
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
    print(f"{name}.png  {path}")


def shoot_monitoring(page: Page, base: str) -> None:
    """The central station once the demo feed has played a while, and a monitored patient's page."""
    shoot(page, base, "/monitoring", "monitoring-home")
    page.click("a.card[href^='/monitoring/wards/']")
    page.wait_for_timeout(12_000)  # the demo feed fills the tiles and raises the recordings' alarms
    page.screenshot(path=str(OUT / "central-station.png"), full_page=True)
    print("central-station.png")
    page.locator(".bedtile a.who").first.click()
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1500)  # the trend chart draws
    page.screenshot(path=str(OUT / "monitoring-patient.png"), full_page=True)
    print("monitoring-patient.png")


def shoot_triage(browser: Browser, base: str) -> None:
    """The nurse's desk with the demo walk-ins, one of them opened, and a patient's check on a phone."""
    context = browser.new_context(viewport={"width": 1360, "height": 860}, locale="zh-CN")
    page = context.new_page()
    sign_in(page, base, "nurse.wang")
    shoot(page, base, "/triage", "triage-desk")
    page.click("table.data tbody tr:first-child a")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(OUT / "triage-nurse.png"), full_page=True)
    print("triage-nurse.png")
    context.close()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", device_scale_factor=2)
    page = phone.new_page()
    sign_in(page, base, "patient.liu")
    page.goto(base + "/triage")
    page.fill("textarea[name=text]", "孩子咳嗽三天了，流鼻涕，打喷嚏，没有发烧")
    page.click("form[action='/triage/start'] button")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(OUT / "triage-question.png"), full_page=True)
    print("triage-question.png")
    for answer in ("yes", "unsure", "no", "unsure", "unsure", "no", "unsure", "unsure"):
        if page.locator(f"button[value={answer}]").count() == 0:
            break
        page.click(f"button[value={answer}]")
        page.wait_for_load_state("networkidle")
    if page.locator("section.tri-result").count() == 0:
        page.click("form[action$='/finish'] button")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(OUT / "triage-result.png"), full_page=True)
    print("triage-result.png")
    phone.close()


def send_demo_studies(base: str) -> None:
    """Two real chest radiographs over STOW-RS (pydicom-data's CR and the RSNA test image), filed to a
    demo patient, so the worklist and the viewer have something the AI has read."""
    import io
    import json
    import urllib.parse
    import urllib.request

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    def call(path: str, body: bytes, headers: dict[str, str]) -> dict:
        request = urllib.request.Request(base + path, data=body, headers=headers, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own local server
            return json.loads(response.read() or b"{}")

    token = call(
        "/api/v1/auth/token",
        json.dumps({"username": "rad.liu", "password": DEMO_PASSWORD}).encode(),
        {"Content-Type": "application/json"},
    )["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    query = urllib.parse.quote("杨志强")
    request = urllib.request.Request(f"{base}/api/v1/patients?q={query}", headers=auth)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        mrn = json.loads(response.read())["items"][0]["mrn"]
    files = [
        get_testdata_file("RG1_UNCR.dcm", download=False),
        ROOT / "tests/imaging/fixtures/cxr_jpeg_baseline.dcm",
    ]
    for path in files:
        if path is None:
            continue
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.BodyPartExamined = mrn, "CHEST"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
            generate_uid(),
            generate_uid(),
            generate_uid(),
        )
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SpecificCharacterSet, ds.StudyDescription = "ISO_IR 192", "胸部正位 Chest PA"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        boundary = "tianfu-screenshots"
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + buffer.getvalue()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        call(
            "/api/v1/imaging/dicomweb/studies",
            body,
            auth | {"Content-Type": content_type, "Accept": "application/dicom+json"},
        )
    time.sleep(8)  # the AI reads them in the background


def shoot_imaging(browser: Browser, base: str) -> None:
    send_demo_studies(base)
    context = browser.new_context(viewport={"width": 1360, "height": 860}, locale="zh-CN")
    page = context.new_page()
    sign_in(page, base, "rad.liu")
    shoot(page, base, "/imaging", "imaging-worklist")
    page.click("table.data tbody tr:first-child a")
    page.wait_for_load_state("networkidle")
    page.check("input[name=heatmap]")
    page.wait_for_timeout(500)
    page.screenshot(path=str(OUT / "imaging-viewer.png"), full_page=True)
    print("imaging-viewer.png")
    context.close()


def shoot_ai(browser: Browser, base: str) -> None:
    """The registry, a model's card with its field performance, and a local validation report."""
    context = browser.new_context(viewport={"width": 1360, "height": 860}, locale="zh-CN")
    page = context.new_page()
    sign_in(page, base, "admin")
    shoot(page, base, "/ai", "ai-registry")
    model = "/ai/models/tianfu-imaging-pneumonia"
    shoot(page, base, model, "ai-model")
    page.set_input_files(
        "input[name=file]", str(ROOT / "src" / "tianfu" / "ai" / "demo_data" / "pneumonia_val200.npz")
    )
    page.click("form[action^='/ai/validate/'] button[type=submit]")
    page.wait_for_url(base + "/ai/validations/*")
    page.frame_locator("iframe.report").locator("img").first.wait_for(timeout=120_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(OUT / "ai-validation.png"), full_page=True)
    print("ai-validation.png")
    context.close()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as var_dir:
        server, base = start_server(var_dir)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1360, "height": 860}, locale="zh-CN")
                page = context.new_page()
                shoot(page, base, "/login", "login-zh")
                sign_in(page, base, "nurse.wang")
                shoot(page, base, "/", "home-nurse")
                shoot(page, base, "/patients", "patients-nurse")
                page.click("table.data tbody tr:first-child a")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / "patient-detail.png"), full_page=True)
                print("patient-detail.png")
                shoot_monitoring(page, base)
                context.close()
                shoot_triage(browser, base)
                shoot_imaging(browser, base)
                shoot_ai(browser, base)

                for username, pages in (
                    (
                        "admin",
                        [
                            ("/admin/users", "users-admin"),
                            ("/patients/new", "patient-register"),
                            ("/monitoring/devices", "monitoring-devices"),
                        ],
                    ),
                    ("auditor", [("/", "home-auditor"), ("/audit", "audit")]),
                    ("patient.liu", [("/me/access-log", "access-log-patient")]),
                    ("dr.zhang", [("/account", "account")]),
                ):
                    context = browser.new_context(viewport={"width": 1360, "height": 860}, locale="zh-CN")
                    page = context.new_page()
                    sign_in(page, base, username)
                    for path, name in pages:
                        shoot(page, base, path, name)
                    context.close()

                context = browser.new_context(viewport={"width": 1360, "height": 860})
                context.add_cookies([{"name": "tianfu_lang", "value": "en", "url": base}])
                page = context.new_page()
                shoot(page, base, "/login", "login-en")
                sign_in(page, base, "dr.chen")
                shoot(page, base, "/patients", "patients-en")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
