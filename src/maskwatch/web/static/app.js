// maskwatch page: send photos or camera frames to POST /v1/detect and draw the JSON it returns.
// Plain JavaScript, no build step and nothing fetched from elsewhere, so it works offline.
"use strict";

const API = "/v1/detect";
const LIVE_MAX_SIDE = 640; // frames are shrunk to this before sending: faces stay findable, uploads small
const LIVE_JPEG_QUALITY = 0.8;
// The same colours as the drawings of `maskwatch detect` (outputs/annotate.py) and the badges in style.css.
const COLORS = { with_mask: "#17804a", without_mask: "#c8372d", incorrect_mask: "#a85a00" };
const LABEL_TEXT = { with_mask: "Mask", without_mask: "No mask", incorrect_mask: "Mask below nose" };
const KEY_STORAGE = "maskwatch.apiKey";

const $ = (id) => document.getElementById(id);

// ---------- talking to the server ----------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function detect(blob, filename) {
  if (serverLabels === null) await checkServer();  // the labels say how to read a "no mask" face's confidence
  const form = new FormData();
  form.append("file", blob, filename);
  const response = await fetch(API, { method: "POST", body: form, headers: authHeaders() });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // a proxy's HTML error page, say: reported below by status alone
  }
  if (!response.ok) {
    const message = (body && body.error) || `server answered ${response.status}`;
    if (response.status === 401) askForKey();
    throw new ApiError(response.status, message);
  }
  return body;
}

function askForKey() {
  $("settings").open = true;
  $("api-key").focus();
}

let serverLabels = null;  // the labels the server's answers can carry (/readyz), once known

async function checkServer() {
  const status = $("server-status");
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    const ok = response.ok && body.status === "ready";
    if (ok && Array.isArray(body.labels)) serverLabels = body.labels;
    status.textContent = ok ? `Server ready · ${body.workers} worker${body.workers === 1 ? "" : "s"}` : "Server not ready";
    status.className = `server-status ${ok ? "ok" : "bad"}`;
  } catch {
    status.textContent = "Server unreachable";
    status.className = "server-status bad";
  }
}

// ---------- drawing ----------

// The probability of the face's own label as it is meant; results of older servers carry only
// mask_probability, and a two-class server's "without_mask" holds the masks below the nose too.
function confidence(face) {
  const twoClass = serverLabels !== null && !serverLabels.includes("incorrect_mask");
  if (face.probabilities && face.label in face.probabilities && !twoClass) return face.probabilities[face.label];
  return face.label === "with_mask" ? face.mask_probability : 1 - face.mask_probability;
}

function labelName(face) {
  return LABEL_TEXT[face.label] || face.label;
}

function labelText(face) {
  return `${labelName(face)} ${Math.round(confidence(face) * 100)}%`;
}

// Boxes and labels on a transparent canvas laid over a picture of width x height pixels.
// With `mirror` the picture is shown flipped (a selfie view): flip the boxes, not the text.
function drawFaces(canvas, width, height, faces, mirror = false) {
  // The canvas gets the resolution it is shown at, so labels stay sharp over a small photo; drawing
  // is in picture pixels through the transform. Lines and text keep one on-screen size.
  const shown = canvas.getBoundingClientRect().width || width;
  const perPicturePixel = (shown * (window.devicePixelRatio || 1)) / width;
  canvas.width = Math.max(1, Math.round(width * perPicturePixel));
  canvas.height = Math.max(1, Math.round(height * perPicturePixel));
  const ctx = canvas.getContext("2d");
  ctx.setTransform(perPicturePixel, 0, 0, perPicturePixel, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const perCssPixel = width / shown;
  const line = 2.5 * perCssPixel;
  const fontSize = 14 * perCssPixel;
  ctx.font = `600 ${fontSize}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const face of faces) {
    let [x1, y1, x2, y2] = face.box;
    if (mirror) [x1, x2] = [width - x2, width - x1];
    const color = COLORS[face.label] || "#888";
    ctx.lineWidth = line;
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = labelText(face);
    const pad = fontSize / 4;
    const boxHeight = fontSize + 2 * pad;
    const textWidth = ctx.measureText(text).width + 2 * pad;
    const top = labelTop(y1, y2, boxHeight, height);
    const left = Math.min(Math.max(0, x1 - line / 2), Math.max(0, width - textWidth));
    ctx.fillStyle = color;
    ctx.fillRect(left, top, textWidth, boxHeight);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, left + pad, top + pad);
  }
}

// Above the box; below it when the box touches the top; inside it when the face fills the picture.
function labelTop(y1, y2, labelHeight, height) {
  if (y1 - labelHeight >= 0) return y1 - labelHeight;
  if (y2 + labelHeight <= height) return y2;
  return Math.max(0, y1);
}

function summarise(faces) {
  const masked = faces.filter((f) => f.label === "with_mask").length;
  const incorrect = faces.filter((f) => f.label === "incorrect_mask").length;
  if (faces.length === 0) return "No faces found";
  const noun = faces.length === 1 ? "face" : "faces";
  const below = incorrect ? ` · ${incorrect} with the mask below the nose` : "";
  return `${faces.length} ${noun} · ${masked} with a mask · ${faces.length - masked - incorrect} without${below}`;
}

// ---------- photos ----------

let photoQueue = Promise.resolve();
const objectUrls = new Set();

function addPhotos(files) {
  const list = Array.from(files); // not filtered by type: the server judges the bytes and says what is wrong
  if (list.length === 0) return;
  $("clear-results").hidden = false;
  setStatus("photos-status", `Analysing ${list.length} photo${list.length === 1 ? "" : "s"}…`);
  let done = 0;
  for (const file of list) {
    const card = makeCard(file);
    $("results").prepend(card.element);
    // One photo at a time: the server's workers are shared with everyone else using it.
    photoQueue = photoQueue.then(() => analysePhoto(file, card)).finally(() => {
      done += 1;
      if (done === list.length) setStatus("photos-status", `Done: ${list.length} photo${list.length === 1 ? "" : "s"} analysed.`);
    });
  }
}

function makeCard(file) {
  const element = document.createElement("li");
  element.className = "result pending";
  const url = URL.createObjectURL(file);
  objectUrls.add(url);
  element.innerHTML = `
    <div class="frame"><img alt=""><canvas class="overlay" aria-hidden="true"></canvas></div>
    <div class="body"><h2></h2><p class="summary">Analysing…</p><ul class="faces"></ul></div>`;
  const img = element.querySelector("img");
  img.src = url;
  img.alt = `Photo ${file.name}`;
  // A file the browser cannot show (TIFF, or not an image at all): the text below still tells the result.
  img.addEventListener("error", () => { element.querySelector(".frame").hidden = true; });
  element.querySelector("h2").textContent = file.name;
  return {
    element,
    img,
    canvas: element.querySelector("canvas"),
    summary: element.querySelector(".summary"),
    faces: element.querySelector(".faces"),
  };
}

async function analysePhoto(file, card) {
  try {
    const result = await detect(file, file.name);
    showResult(card, result);
  } catch (error) {
    card.element.className = "result failed";
    card.summary.textContent = `Could not analyse: ${error.message}`;
  }
}

function showResult(card, result) {
  card.element.className = "result done";
  card.element.dataset.faces = String(result.faces.length);
  card.summary.textContent = summarise(result.faces);
  card.faces.replaceChildren(...result.faces.map(faceItem));
  drawFaces(card.canvas, result.width, result.height, result.faces);
  card.img.alt = `Photo ${result.file}: ${summarise(result.faces).toLowerCase()}`;
}

function faceItem(face, index) {
  const item = document.createElement("li");
  item.className = `face ${face.label}`;
  const badge = document.createElement("span");
  badge.className = `badge ${face.label}`;
  badge.textContent = labelName(face);
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.textContent = `Face ${index + 1}: ${Math.round(confidence(face) * 100)}% sure · face score ${face.score.toFixed(2)}`;
  item.append(badge, detail);
  return item;
}

function clearPhotos() {
  $("results").replaceChildren();
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls.clear();
  $("clear-results").hidden = true;
  setStatus("photos-status", "");
}

function setUpPhotos() {
  const input = $("file-input");
  input.addEventListener("change", () => {
    addPhotos(input.files);
    input.value = ""; // picking the same file again must fire "change" again
  });
  const zone = $("panel-photos");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    $("dropzone").classList.add("dragging");
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) $("dropzone").classList.remove("dragging");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    $("dropzone").classList.remove("dragging");
    addPhotos(event.dataTransfer.files);
  });
  $("clear-results").addEventListener("click", clearPhotos);
}

// ---------- live camera ----------

// starting: a start is waiting for the permission prompt or the video; session: bumped by every start and
// stop, so that a start finishing after a stop (or a second start) gives its stream back instead of keeping it.
const live = { stream: null, starting: false, timer: null, session: 0, masked: 0, incorrect: 0, faces: 0 };

const cameraActive = () => Boolean(live.stream) || live.starting;

function setUpLive() {
  $("camera-toggle").addEventListener("click", () => (cameraActive() ? stopCamera() : startCamera()));
  $("reset-counter").addEventListener("click", resetCounter);
  $("mirror").addEventListener("change", () => {
    $("stage").classList.toggle("mirrored", $("mirror").checked);
  });
  $("stage").classList.toggle("mirrored", $("mirror").checked);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && cameraActive()) stopCamera("Camera stopped while the page was hidden.");
  });
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("live-status", "This browser gives no camera here: the page needs https or localhost.", true);
    return;
  }
  if (cameraActive()) return; // a double click, or a start while the permission prompt is open
  live.starting = true;
  live.session += 1; // answers to frames of an earlier session are dropped
  const session = live.session;
  const release = (stream) => stream.getTracks().forEach((track) => track.stop());
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" },
      audio: false,
    });
  } catch (error) {
    if (session === live.session) {
      live.starting = false;
      setStatus("live-status", `No camera: ${error.message || error.name}`, true);
    }
    return;
  }
  if (session !== live.session) {
    release(stream); // stopped (tab switch, hidden page, Stop) while the prompt was open
    return;
  }
  live.stream = stream;
  const video = $("video");
  video.srcObject = stream;
  try {
    await video.play();
  } catch (error) {
    if (session === live.session) {
      stopCamera(`The camera video could not play: ${error.message || error.name}`);
    } else {
      release(stream);
    }
    return;
  }
  if (session !== live.session) {
    release(stream); // stopCamera ran during play() and already stopped it; this is harmless
    return;
  }
  live.starting = false;
  // The stage takes the camera's shape, so the overlay, stretched over the stage, lines up with the video.
  $("stage").style.aspectRatio = `${video.videoWidth || 4} / ${video.videoHeight || 3}`;
  $("stage").classList.add("on");
  $("camera-toggle").textContent = "Stop camera";
  $("camera-toggle").setAttribute("aria-pressed", "true");
  setStatus("live-status", "Camera on: analysing frames.");
  scheduleFrame(session, 0);
}

function stopCamera(message = "Camera off.") {
  clearTimeout(live.timer);
  if (live.stream) live.stream.getTracks().forEach((track) => track.stop());
  live.stream = null;
  live.starting = false; // a start still waiting sees the new session and gives its stream back
  live.session += 1;
  $("video").srcObject = null;
  $("stage").classList.remove("on");
  $("video-overlay").getContext("2d").clearRect(0, 0, $("video-overlay").width, $("video-overlay").height);
  $("camera-toggle").textContent = "Start camera";
  $("camera-toggle").setAttribute("aria-pressed", "false");
  setStatus("live-status", message);
}

// One frame in flight at a time, and no more often than the chosen rate: the next frame is
// scheduled only after the previous answer arrives.
function scheduleFrame(session, delay) {
  live.timer = setTimeout(() => sendFrame(session), delay);
}

async function sendFrame(session) {
  if (session !== live.session) return;
  const started = performance.now();
  const video = $("video");
  try {
    if (video.readyState >= 2 && video.videoWidth > 0) {
      const blob = await grabFrame(video);
      const result = await detect(blob, "frame.jpg");
      if (session !== live.session) return;
      showLiveResult(result, performance.now() - started);
    }
  } catch (error) {
    if (session !== live.session) return;
    setStatus("live-status", `Frame not analysed: ${error.message}`, true);
    if (error instanceof ApiError && error.status === 401) {
      stopCamera("Camera stopped: the server needs an API key (see Settings).");
      return;
    }
  }
  const interval = 1000 / Number($("fps").value);
  scheduleFrame(session, Math.max(0, interval - (performance.now() - started)));
}

function grabFrame(video) {
  const scale = Math.min(1, LIVE_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) =>
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("could not encode the frame"))),
      "image/jpeg", LIVE_JPEG_QUALITY));
}

function showLiveResult(result, milliseconds) {
  drawFaces($("video-overlay"), result.width, result.height, result.faces, $("mirror").checked);
  const masked = result.faces.filter((f) => f.label === "with_mask").length;
  live.masked += masked;
  live.incorrect += result.faces.filter((f) => f.label === "incorrect_mask").length;
  live.faces += result.faces.length;
  $("frame-summary").textContent = result.faces.length ? `${masked} of ${result.faces.length} masked` : "no faces";
  $("latency").textContent = `${Math.round(milliseconds)} ms`;
  updateCounter();
  if ($("live-status").classList.contains("error")) setStatus("live-status", "Camera on: analysing frames.");
}

function updateCounter() {
  $("count-masked").textContent = String(live.masked);
  $("count-incorrect").textContent = String(live.incorrect);
  $("count-faces").textContent = String(live.faces);
  $("compliance").textContent = live.faces ? `${Math.round((100 * live.masked) / live.faces)}%` : "–";
}

function resetCounter() {
  live.masked = 0;
  live.incorrect = 0;
  live.faces = 0;
  $("frame-summary").textContent = "–";
  updateCounter();
}

// ---------- tabs, settings, status ----------

function setStatus(id, text, isError = false) {
  const element = $(id);
  element.textContent = text;
  element.classList.toggle("error", isError);
}

function setUpTabs() {
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  const select = (tab) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (tab.id !== "tab-live" && cameraActive()) stopCamera();
  };
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(index + step + tabs.length) % tabs.length];
      select(next);
      next.focus();
    });
  });
}

function setUpSettings() {
  const input = $("api-key");
  input.value = sessionStorage.getItem(KEY_STORAGE) || "";
  input.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, input.value.trim()));
}

document.addEventListener("DOMContentLoaded", () => {
  setUpTabs();
  setUpSettings();
  setUpPhotos();
  setUpLive();
  checkServer();
});
