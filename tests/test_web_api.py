"""``maskwatch serve`` over real HTTP: the JSON contract, limits, keys, bad files and fuzzed bodies."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from badfiles import write_bad_inputs
from conftest import BARE_JPG, MASKED_JPG
from webserver import Server, running_server

from maskwatch.labels import LABELS

KEY = "test-key-4f1c9a"
ORIGIN = "http://allowed.example"
LIMIT_MB = 1
CONTRACT_KEYS = {"file", "width", "height", "faces", "error"}
FACE_KEYS = {"box", "score", "landmarks", "label", "mask_probability", "probabilities"}
# The status each awkward file must get; the rest of write_bad_inputs' files are readable pictures.
BAD_STATUS = {"empty.jpg": 400, "truncated.jpg": 400, "corrupt.jpg": 400, "not_an_image.jpg": 415,
              "huge.png": 413}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The server most tests use: an API key, a 1 MB upload limit and one allowed CORS origin."""
    with running_server("--api-key", KEY, "--max-upload-mb", str(LIMIT_MB), "--cors-origin", ORIGIN,
                        "--workers", "2") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def open_server() -> Iterator[Server]:
    """No key and no CORS, as by default; one worker and no queue, so that it is easily busy."""
    with running_server("--workers", "1", "--queue-limit", "0", "--read-timeout", "3") as running:
        yield running


def assert_contract(body: dict) -> None:
    assert set(body) == CONTRACT_KEYS
    for face in body["faces"]:
        assert set(face) == FACE_KEYS
        assert face["label"] in LABELS and set(face["probabilities"]) <= set(LABELS)


def assert_error(response: httpx.Response, status: int | None = None) -> None:
    """A refusal: 4xx (or the given status) with a JSON body holding a non-empty "error" string."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, str) and error


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from the Prometheus text; 0 when the series does not exist yet."""
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    prefix = f"{name}{{{selector}}} " if labels else f"{name} "
    values = [float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) <= 1
    return values[0] if values else 0.0


def test_multipart_gives_the_cli_json(client: httpx.Client, detector) -> None:
    upload = {"file": (MASKED_JPG.name, MASKED_JPG.read_bytes(), "image/jpeg")}
    response = client.post("/v1/detect", files=upload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_contract(body)
    local, _ = detector.analyze(MASKED_JPG, name=MASKED_JPG.name)
    expected = local.to_dict()
    assert (body["file"], body["width"], body["height"], body["error"]) == (
        expected["file"], expected["width"], expected["height"], None)
    assert [f["label"] for f in body["faces"]] == [f["label"] for f in expected["faces"]] == ["with_mask"]
    for got, want in zip(body["faces"], expected["faces"], strict=True):
        assert got["box"] == pytest.approx(want["box"], abs=0.5)
        assert got["mask_probability"] == pytest.approx(want["mask_probability"], abs=1e-3)


def test_raw_body_is_judged_by_its_bytes_not_its_content_type(client: httpx.Client) -> None:
    for content_type in ("image/jpeg", "application/octet-stream", "text/plain"):
        headers = {"Content-Type": content_type}
        response = client.post("/v1/detect", content=BARE_JPG.read_bytes(), headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert_contract(body)
        assert body["file"] == "upload"
        assert [f["label"] for f in body["faces"]] == ["without_mask"]
    # and a document named and typed as a JPEG is still refused
    fake = b"%PDF-1.4\n" + b"x" * 500
    assert_error(client.post("/v1/detect", files={"file": ("photo.jpg", fake, "image/jpeg")}), 415)


def test_annotated_returns_the_drawn_jpeg(client: httpx.Client) -> None:
    plain = client.post("/v1/detect", content=MASKED_JPG.read_bytes()).json()
    response = client.post("/v1/detect", params={"annotated": "1"}, content=MASKED_JPG.read_bytes())
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert (response.headers["x-maskwatch-faces"], response.headers["x-maskwatch-with-mask"]) == ("1", "1")
    drawn = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape[:2] == (plain["height"], plain["width"])
    # The box's left edge is drawn in green (BGR 60,180,60): check a strip of it, midway down.
    x1, y1, _, y2 = (round(v) for v in plain["faces"][0]["box"])
    strip = drawn[(y1 + y2) // 2 - 10:(y1 + y2) // 2 + 10, x1 - 1:x1 + 2].reshape(-1, 3).astype(int)
    blue, green, red = strip.mean(axis=0)
    assert green > red + 60 and green > blue + 60, strip.mean(axis=0)


def test_annotated_image_too_wide_for_jpeg_comes_back_as_png(client: httpx.Client) -> None:
    # libjpeg stops at 65,500 px a side: such an image is valid, and annotating it must not give a 500.
    _, png = cv2.imencode(".png", np.full((2, 70000, 3), 128, np.uint8))
    response = client.post("/v1/detect", params={"annotated": "1"}, content=png.tobytes())
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "image/png"
    drawn = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape[:2] == (2, 70000)


def test_metric_labels_are_bounded(server: Server, client: httpx.Client) -> None:
    for method in ("FROBNICATE", "X-SCAN-1", "GET"):
        client.request(method, "/v1/detect")
        client.request(method, f"/probe-{method.lower()}/x")
    text = client.get("/metrics").text
    series = [line for line in text.splitlines() if line.startswith("maskwatch_http_requests_total{")]
    methods = set(re.findall(r'method="([^"]*)"', "\n".join(series)))
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert "other" in methods and methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other"}
    assert not any(route.startswith("/probe") for route in routes), routes
    assert "other" in routes


def test_slow_upload_gets_408_and_frees_its_slot(open_server: Server) -> None:
    # One worker and no queue: a client that never finishes its body would otherwise hold the only slot.
    host, port = open_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 100000\r\n\r\n\xff\xd8\xff")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)  # the server answers by itself, after --read-timeout
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"application/json" in head and json.loads(body)["error"]
    with httpx.Client(base_url=open_server.url, timeout=60) as http:
        assert http.post("/v1/detect", content=MASKED_JPG.read_bytes()).status_code == 200


def test_health_readiness_and_metrics(server: Server, client: httpx.Client) -> None:
    bare = httpx.Client(base_url=server.url, timeout=30)  # no key: probes and the API description are open
    assert bare.get("/healthz").json() == {"status": "ok"}
    ready = bare.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "workers": 2,
                                                         "labels": ["incorrect_mask", "with_mask", "without_mask"]}
    assert bare.get("/openapi.json").status_code == 200 and bare.get("/docs").status_code == 200
    assert_error(bare.get("/metrics"), 401)  # face counts by label: the key covers them
    before = client.get("/metrics").text
    assert client.post("/v1/detect", content=MASKED_JPG.read_bytes()).status_code == 200
    assert_error(client.post("/v1/detect", content=b"\xff\xd8\xff not really"), 400)
    response = bare.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})  # as Prometheus sends it
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = response.text
    for status in ("200", "400"):
        labels = {"route": "/v1/detect", "method": "POST", "status": status}
        name = "maskwatch_http_requests_total"
        assert metric(after, name, **labels) == metric(before, name, **labels) + 1, status
    assert metric(after, "maskwatch_faces_total", label="with_mask") == metric(
        before, "maskwatch_faces_total", label="with_mask") + 1
    latency = "maskwatch_http_request_duration_seconds"
    count = metric(after, f"{latency}_count", route="/v1/detect")
    assert metric(after, f"{latency}_bucket", route="/v1/detect", le="+Inf") == count
    assert count >= 2 and metric(after, f"{latency}_sum", route="/v1/detect") > 0
    assert metric(after, "maskwatch_inference_in_flight") == 0
    bare.close()


def test_api_key(server: Server) -> None:
    photo = BARE_JPG.read_bytes()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        missing = http.post("/v1/detect", content=photo)
        assert_error(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(http.post("/v1/detect", content=photo, headers={"X-API-Key": KEY + "x"}), 401)
        assert_error(http.post("/v1/detect", content=photo, headers={"Authorization": f"Basic {KEY}"}), 401)
        bearer = {"Authorization": f"Bearer {KEY}"}
        assert http.post("/v1/detect", content=photo, headers=bearer).status_code == 200
        assert http.post("/v1/detect", content=photo, headers={"X-API-Key": KEY}).status_code == 200
        assert http.get("/").status_code == 200  # the page itself is public; it asks for the key


def test_upload_size_limit(client: httpx.Client) -> None:
    limit = LIMIT_MB * 1024 * 1024
    big = b"\xff\xd8\xff" + bytes(limit)  # a JPEG start, one MB of zeros after it
    assert_error(client.post("/v1/detect", content=big), 413)  # refused from its Content-Length

    def chunked() -> Iterator[bytes]:  # no Content-Length: the bytes are counted as they come
        yield b"\xff\xd8\xff"
        for _ in range(40):
            yield bytes(64 * 1024)

    assert_error(client.post("/v1/detect", content=chunked()), 413)
    assert_error(client.post("/v1/detect", files={"file": ("big.jpg", big, "image/jpeg")}), 413)
    # a file of exactly the limit still goes through the size check, either way it is sent
    exact = MASKED_JPG.read_bytes() + bytes(limit - MASKED_JPG.stat().st_size)
    assert client.post("/v1/detect", files={"file": ("exact.jpg", exact, "image/jpeg")}).status_code == 200
    assert client.post("/v1/detect", content=exact).status_code == 200


def test_every_awkward_file(server: Server, client: httpx.Client, tmp_path: Path) -> None:
    files = write_bad_inputs(tmp_path, BARE_JPG)
    for name, path in files.items():
        response = client.post("/v1/detect", files={"file": (name, path.read_bytes(), "image/jpeg")})
        if name in BAD_STATUS:
            assert_error(response, BAD_STATUS[name])
            continue
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        assert_contract(body)
        assert body["file"] == name  # unicode and spaces survive
        if name != "one_pixel.png":
            assert body["faces"], f"{name}: the face should still be found"
    assert server.alive()
    assert client.get("/healthz").status_code == 200


def test_pixel_limit_is_checked_before_decoding(client: httpx.Client) -> None:
    # huge.png above is 400 MP; this one is just over the default 40 MP and still a small file.
    _, png = cv2.imencode(".png", np.zeros((4001, 10000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    response = client.post("/v1/detect", content=png.tobytes())
    assert_error(response, 413)
    assert "40,000,000" in response.json()["error"]


def test_malformed_requests_get_json_errors(client: httpx.Client) -> None:
    photo = BARE_JPG.read_bytes()
    wrong_field = {"image": ("a.jpg", photo, "image/jpeg")}
    assert_error(client.post("/v1/detect", files=wrong_field), 400)
    text_field = client.post("/v1/detect", data={"file": "not a file"}, files={"other": ("a.txt", b"x")})
    assert_error(text_field, 400)
    assert "holds text, not a file" in text_field.json()["error"]  # curl -F file=text instead of file=@path
    assert_error(client.post("/v1/detect", data={"file": "not a file"}), 415)  # a urlencoded form is no image
    assert_error(client.post("/v1/detect", content=b"--x\r\ngarbage",
                             headers={"Content-Type": "multipart/form-data; boundary=x"}), 400)
    no_boundary = {"Content-Type": "multipart/form-data"}
    assert_error(client.post("/v1/detect", content=b"--x", headers=no_boundary), 400)
    assert_error(client.post("/v1/detect", params={"annotated": "maybe"}, content=photo), 400)
    assert_error(client.post("/v1/detect", content=b""), 400)
    assert_error(client.get("/v1/detect"), 405)
    assert_error(client.get("/no/such/page"), 404)


def test_cors_only_for_the_configured_origin(client: httpx.Client, open_server: Server) -> None:
    photo = BARE_JPG.read_bytes()
    allowed = client.post("/v1/detect", content=photo, headers={"Origin": ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    preflight = client.options("/v1/detect", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, content-type"})
    assert preflight.status_code == 200
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    other = client.post("/v1/detect", content=photo, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # Off by default: no header for anyone, and no key needed when none is set.
    with httpx.Client(base_url=open_server.url, timeout=30) as http:
        response = http.post("/v1/detect", content=photo, headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


def test_busy_server_answers_503_not_a_queue_without_end(open_server: Server) -> None:
    photo = MASKED_JPG.read_bytes()

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=open_server.url, timeout=60) as http:
            return http.post("/v1/detect", content=photo)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses  # one worker, no queue: the rest are refused
    assert set(statuses) == {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1" and response.json()["error"]
    assert post(0).status_code == 200  # and it recovers at once


def test_openapi_and_offline_docs(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    detect = spec["paths"]["/v1/detect"]["post"]
    assert {"multipart/form-data", "application/octet-stream"} <= set(detect["requestBody"]["content"])
    assert {"200", "400", "401", "413", "415"} <= set(detect["responses"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    for page in (docs.text, client.get("/").text):
        external = re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
        assert not external, "the pages must load nothing from elsewhere"
    for asset in ("/static/app.js", "/static/docs.js", "/static/style.css", "/static/docs.css"):
        text = client.get(asset).text
        assert "//cdn" not in text and "https://" not in text, asset


def fuzz_body(rng: random.Random, jpeg: bytes) -> tuple[dict[str, str], bytes, dict[str, str]]:
    """One malformed request: (query, body, headers)."""
    kind = rng.randrange(7)
    query = {"annotated": rng.choice(["1", "0", "true", ""])} if rng.random() < 0.3 else {}
    noise = rng.randbytes(rng.randrange(0, 4096))
    if kind == 0:
        content_type = rng.choice(["image/jpeg", "application/octet-stream", "text/plain"])
        return query, noise, {"Content-Type": content_type}
    if kind == 1:  # the first bytes of a real format, then noise
        magic = rng.choice([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                            b"RIFF\x10\x00\x00\x00WEBPVP8 "])
        return query, magic + noise, {}
    if kind == 2:
        return query, jpeg[: rng.randrange(1, len(jpeg))], {}
    if kind == 3:  # a real JPEG with bytes overwritten
        damaged = bytearray(jpeg)
        for _ in range(rng.randrange(1, 30)):
            damaged[rng.randrange(3, len(damaged))] = rng.randrange(256)
        return query, bytes(damaged), {}
    boundary = "".join(rng.choice("abcXYZ019-_") for _ in range(rng.randrange(1, 40)))
    part = jpeg if kind == 4 else noise
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + part + f"\r\n--{boundary}--\r\n".encode()
    if kind in (4, 5):  # cut short, or with a few bytes of the envelope broken
        body = body[: rng.randrange(1, len(body))] if kind == 4 else _flip(rng, body, 5)
    headers = {"Content-Type": rng.choice([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                                           "multipart/form-data; boundary=", "multipart/mixed; boundary=x"])}
    return query, body, headers


def _flip(rng: random.Random, data: bytes, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def test_fuzzed_bodies_never_give_a_5xx(server: Server, client: httpx.Client) -> None:
    rng = random.Random(20240605)
    jpeg = BARE_JPG.read_bytes()
    statuses: dict[int, int] = {}
    for i in range(200):
        query, body, headers = fuzz_body(rng, jpeg)
        response = client.post("/v1/detect", params=query, content=body, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (i, headers, body[:80], response.text[:300])
        if response.status_code >= 400:
            assert_error(response)
        elif response.headers["content-type"] == "application/json":
            assert_contract(response.json())
    assert server.alive(), server.log()
    assert len(statuses) > 1, statuses  # the cases really reach different refusals
    assert client.post("/v1/detect", content=jpeg).status_code == 200  # and the server still works


def test_serve_refuses_a_missing_model_before_listening(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", "0",
         "--classifier", str(tmp_path / "none.onnx")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "none.onnx" in result.stderr


def test_serve_on_a_taken_port_says_so_and_never_claims_to_serve() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "maskwatch.cli", "serve", "--host", "127.0.0.1",
                                 "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "serving on" not in result.stderr


def test_serve_on_port_0_says_its_port_and_ends_cleanly_on_ctrl_c() -> None:
    import signal

    process = subprocess.Popen([sys.executable, "-m", "maskwatch.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:  # the models load first; then the port is bound and said
            lines.append(line)
            if found := re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line):
                break
        assert found, "".join(lines)
        port = int(found.group(1))
        assert port != 0 and httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=60)[1]
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest


@pytest.mark.parametrize("option", [["--max-upload-mb", "inf"], ["--max-upload-mb", "nan"],
                                    ["--read-timeout", "0"], ["--read-timeout", "inf"]])
def test_serve_refuses_non_finite_limits(option: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "maskwatch.cli", "serve", "--port", "0", *option],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert option[0] in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_corrupt_model_with_a_message(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not an onnx model" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "serve", "--port", "0", "--classifier", str(corrupt)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot load the models" in result.stderr or "corrupt.onnx" in result.stderr
    assert "Traceback" not in result.stderr
