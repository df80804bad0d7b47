// The playground: calls the v1 API of the server that served this page, nothing else.
//
// Seeds go from 0 to 2**63 - 1, beyond JavaScript's exact integers, so they stay strings
// here and are written into request bodies as JSON number literals by hand.

const SLIDER_COUNT = 8; // latent dimensions with a slider
const SLIDER_RANGE = 4; // sliders span [-4, 4]: almost all of a standard normal
const DEBOUNCE_MS = 120; // typing and dragging settle this long before a request goes out
const TARGET_IMAGE_PX = 256; // default scale brings the image near this size
const TARGET_TILE_PX = 96; // grid tiles near this size
const FRAME_MS = 100; // player speed, and the GIF's time per frame
const MAX_RETRIES = 2; // on 503 (busy), retry after Retry-After this many times
const MAX_SEED = (1n << 63n) - 1n;
const KEY_STORAGE = "imagegen.apiKey";

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  model: null, // the selected model's description
  seed: null, // seed (string) of the image shown, when it came from a seed
  latent: null, // the seed's latent (numbers), the sliders' starting point
  edited: false, // a slider moved since the latent was loaded
  frames: [], // interpolation frames (data URLs)
  frameOrder: [], // indexes of the ping-pong loop
  frameCursor: 0,
  timer: null,
  gridSeeds: [],
  gridClasses: [], // each grid tile's class index (conditional models)
  gridColumns: 1,
};

class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }

  toString() {
    const hint = this.status === 401 ? " Paste the server's API key at the top." : "";
    const stop = hint && !/[.!?]$/.test(this.message) ? "." : "";
    return `${this.status} ${this.type}: ${this.message}${stop}${hint}`;
  }
}

// Each kind of request runs in its own lane: a new request aborts the one still running.
class Lane {
  constructor() {
    this.controller = null;
  }

  next() {
    this.controller?.abort();
    this.controller = new AbortController();
    return this.controller.signal;
  }
}

const lanes = {
  image: new Lane(),
  latent: new Lane(),
  grid: new Lane(),
  interp: new Lane(),
  gif: new Lane(),
};

function debounce(fn, ms) {
  let timer = null;
  const later = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  later.cancel = () => clearTimeout(timer);
  return later;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    });
  });
}

function isAbort(error) {
  return error?.name === "AbortError";
}

// -- the API -----------------------------------------------------------------------------

function apiKey() {
  return $("api-key").value.trim();
}

// A JSON object whose values are JSON texts already (so seeds keep all their digits).
function jsonObject(fields) {
  const parts = Object.entries(fields)
    .filter(([, text]) => text !== undefined)
    .map(([key, text]) => `${JSON.stringify(key)}:${text}`);
  return `{${parts.join(",")}}`;
}

// A seed field's text as a JSON value: digits become a number literal; anything else is
// sent as it is (as a string) so the API's own validation answers for it.
function seedJson(text) {
  const trimmed = text.trim();
  if (/^-?[0-9]+$/.test(trimmed)) {
    return BigInt(trimmed).toString();
  }
  return JSON.stringify(trimmed);
}

function randomSeed() {
  const [value] = crypto.getRandomValues(new BigUint64Array(1));
  return (value & MAX_SEED).toString();
}

// -- classes (class-conditional models) ----------------------------------------------------

function modelClasses() {
  return state.model?.classes ?? [];
}

// Fill every class picker for the selected model; hide them for unconditional models.
function buildClassPickers() {
  const classes = modelClasses();
  for (const field of document.querySelectorAll(".class-field")) field.hidden = classes.length === 0;
  for (const count of document.querySelectorAll(".class-count")) count.textContent = String(classes.length);
  for (const select of document.querySelectorAll(".class-picker")) {
    const anyLabel = select.id === "grid-class" ? "any (one column per class)" : "any (the seed's class)";
    select.replaceChildren(
      new Option(anyLabel, ""),
      ...classes.map((name, index) => new Option(`${index} ${name}`, String(index))),
    );
  }
}

// The picked class index as JSON text, or undefined for "any" (and unconditional models).
function pickedClass(id) {
  if (modelClasses().length === 0) return undefined;
  const value = $(id).value;
  return value === "" ? undefined : value;
}

// The class a seed means without one: seed % num_classes (the API's seed contract).
function seedClass(seedText) {
  const classes = modelClasses();
  if (!classes.length || !/^[0-9]+$/.test(seedText)) return undefined;
  return (BigInt(seedText) % BigInt(classes.length)).toString();
}

function modelPath(suffix) {
  return `/v1/models/${encodeURIComponent(state.model.name)}${suffix}`;
}

// fetch with the key, the error contract, and retries on 503; resolves after the body is read.
async function api(path, { method = "GET", body, accept = "application/json", as = "json", signal } = {}) {
  const headers = { Accept: accept };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  for (let attempt = 0; ; attempt++) {
    const started = performance.now();
    const response = await fetch(path, { method, headers, body, signal });
    if (response.ok) {
      const data = as === "blob" ? await response.blob() : await response.json();
      return { data, headers: response.headers, latencyMs: performance.now() - started };
    }
    let type = "http_error";
    let message = response.statusText || "request failed";
    try {
      const payload = await response.json();
      type = payload.error.type;
      message = payload.error.message;
    } catch {
      // not the service's JSON error shape (a proxy in between?): keep the status text
    }
    const retryAfterS = Number(response.headers.get("Retry-After"));
    if (response.status === 503 && attempt < MAX_RETRIES && retryAfterS > 0) {
      await sleep(retryAfterS * 1000, signal);
      continue;
    }
    throw new ApiError(response.status, type, message);
  }
}

// -- showing results and errors ----------------------------------------------------------

function showError(id, error) {
  const element = $(id);
  if (error) {
    element.textContent = error instanceof ApiError ? error.toString() : `Error: ${error.message}`;
    element.hidden = false;
  } else {
    element.textContent = "";
    element.hidden = true;
  }
}

function setFigureState(id, value) {
  const figure = $(id);
  figure.dataset.state = value;
  figure.setAttribute("aria-busy", value === "loading" ? "true" : "false");
}

function showBlob(img, blob) {
  const old = img.dataset.url;
  const url = URL.createObjectURL(blob);
  img.dataset.url = url;
  img.src = url;
  if (old) URL.revokeObjectURL(old);
}

function formatMs(ms) {
  return `${Math.round(ms)} ms`;
}

// Run `work(signal)` in `lane`: figure busy meanwhile; errors shown; stale results dropped.
async function run(lane, figureId, errorId, work) {
  const signal = lanes[lane].next();
  setFigureState(figureId, "loading");
  try {
    await work(signal);
    if (signal.aborted) return;
    setFigureState(figureId, "ready");
    showError(errorId, null);
  } catch (error) {
    if (isAbort(error) || signal.aborted) return;
    setFigureState(figureId, "error");
    showError(errorId, error);
  }
}

// -- models ------------------------------------------------------------------------------

function defaultScale(model, targetPx) {
  const side = Math.max(model.image.height, model.image.width);
  return Math.max(1, Math.min(16, Math.floor(targetPx / side)));
}

async function loadModels() {
  const select = $("model");
  try {
    const { data } = await api("/v1/models");
    showError("page-error", null);
    state.models = data.models;
    const previous = select.value;
    select.replaceChildren(
      ...state.models.map((model) => new Option(`${model.name} (${model.kind})`, model.name)),
    );
    if (state.models.some((model) => model.name === previous)) select.value = previous;
    select.disabled = state.models.length === 0;
    if (state.models.length === 0) {
      showError("page-error", new Error("the server serves no models"));
      return;
    }
    selectModel(select.value);
  } catch (error) {
    showError("page-error", error);
  }
}

function selectModel(name) {
  const model = state.models.find((candidate) => candidate.name === name);
  if (!model) return;
  state.model = model;
  const { height, width, channels } = model.image;
  $("model-info").textContent =
    `${model.name} ${model.version}: ${model.kind.toUpperCase()}, latent ${model.latent_dim}, ` +
    `${width}\u00d7${height}\u00d7${channels}` +
    (model.dataset?.name ? `, trained on ${model.dataset.name}` : "") +
    `; runs on ${model.providers.join(", ")}. ${model.description}`;
  $("scale").value = String(defaultScale(model, TARGET_IMAGE_PX));
  buildClassPickers();
  if (modelClasses().length) {
    // One column per class, so an "any" grid shows each class down a column.
    $("grid-columns").value = String(modelClasses().length);
    $("grid-count").value = String(Math.min(64, modelClasses().length * 2));
  }
  buildSliders(Math.min(SLIDER_COUNT, model.latent_dim));
  updateOutputs();
  seedChanged();
  renderGrid();
  renderInterpolation();
}

// -- one image, and the latent sliders -----------------------------------------------------

function updateOutputs() {
  $("truncation-value").textContent = Number($("truncation").value).toFixed(2);
  const scale = Number($("scale").value);
  const width = state.model ? state.model.image.width * scale : 0;
  $("scale-value").textContent = `\u00d7${scale}` + (state.model ? ` (${width} px)` : "");
}

function buildSliders(count) {
  const container = $("sliders");
  container.replaceChildren();
  for (let index = 0; index < count; index++) {
    const id = `z-${index}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = `z[${index}]`;
    const slider = document.createElement("input");
    Object.assign(slider, { id, type: "range", min: -SLIDER_RANGE, max: SLIDER_RANGE, step: 0.01 });
    slider.dataset.index = String(index);
    const value = document.createElement("output");
    value.htmlFor = id;
    value.id = `${id}-value`;
    slider.addEventListener("input", () => {
      if (!state.latent) return;
      state.latent[index] = Number(slider.value);
      value.textContent = Number(slider.value).toFixed(2);
      state.edited = true;
      renderImageSoon();
    });
    container.append(label, slider, value);
  }
}

function showLatentOnSliders() {
  const latent = state.latent;
  $("latent-fieldset").disabled = !latent;
  for (const slider of $("sliders").querySelectorAll("input")) {
    const index = Number(slider.dataset.index);
    const value = latent ? latent[index] : 0;
    slider.value = String(value);
    $(`${slider.id}-value`).textContent = latent ? value.toFixed(2) : "\u2013";
  }
}

async function loadLatent(seed) {
  const signal = lanes.latent.next();
  try {
    const { data } = await api(modelPath(`/latents/${encodeURIComponent(seed)}`), { signal });
    state.latent = data.latent;
    state.edited = false;
    showLatentOnSliders();
  } catch (error) {
    if (isAbort(error)) return;
    state.latent = null;
    showLatentOnSliders();
  }
}

function renderImage() {
  if (!state.model) return;
  const model = state.model;
  const seedText = $("seed").value.trim();
  const useLatent = state.edited && state.latent;
  const scale = Number($("scale").value);
  const truncation = $("truncation").value;
  // An edited latent has no seed: it keeps the class its seed had, unless one is picked.
  const chosenClass = pickedClass("class") ?? (useLatent ? seedClass(state.seed ?? "") : undefined);
  const body = jsonObject({
    seed: useLatent || seedText === "" ? undefined : seedJson(seedText),
    latent: useLatent ? JSON.stringify(state.latent) : undefined,
    class: chosenClass,
    truncation: JSON.stringify(Number(truncation)),
    scale: JSON.stringify(scale),
  });
  return run("image", "image-figure", "image-error", async (signal) => {
    const { data, headers, latencyMs } = await api(modelPath("/generate"), {
      method: "POST", body, accept: "image/png", as: "blob", signal,
    });
    const seed = headers.get("X-Seed");
    const className = headers.get("X-Class");
    const img = $("image");
    showBlob(img, data);
    img.dataset.seed = seed ?? "";
    img.dataset.class = className ?? "";
    img.dataset.latent = useLatent ? "edited" : "seed";
    img.dataset.truncation = truncation;
    img.dataset.scale = String(scale);
    img.alt = seed ? `Image of seed ${seed} from ${model.name}` : `Image of an edited latent from ${model.name}`;
    const what = (useLatent ? `seed ${state.seed} with edited latent` : `seed ${seed}`) +
      (className ? ` \u00b7 ${className}` : "");
    $("image-caption").textContent =
      `${what} \u00b7 ${model.image.width * scale}\u00d7${model.image.height * scale} px \u00b7 ` +
      `${formatMs(latencyMs)} round trip`;
    if (!useLatent && seedText === "" && seed && $("seed").value.trim() === "") {
      // A random seed was drawn by the server: show it, and load its latent.
      $("seed").value = seed;
      state.seed = seed;
      loadLatent(seed);
    }
  });
}

// The figure shows busy from the first keystroke, not only once the request goes out.
const renderImageLater = debounce(renderImage, DEBOUNCE_MS);
function renderImageSoon() {
  setFigureState("image-figure", "loading");
  renderImageLater();
}

function seedChanged({ now = true } = {}) {
  const seedText = $("seed").value.trim();
  state.edited = false;
  state.latent = null;
  state.seed = seedText;
  showLatentOnSliders();
  lanes.image.next(); // what is on its way is for the old seed
  if (seedText === "" && !now) {
    // A field emptied while typing: wait for digits, or Enter for a random seed.
    renderImageLater.cancel();
    setFigureState("image-figure", "idle");
    return;
  }
  if (/^[0-9]+$/.test(seedText)) loadLatent(seedText);
  if (now) renderImage();
  else renderImageSoon();
}

function rollSeed() {
  $("seed").value = randomSeed();
  seedChanged();
}

// -- the grid ----------------------------------------------------------------------------

function renderGrid() {
  if (!state.model) return;
  const model = state.model;
  const count = Number($("grid-count").value);
  const classes = modelClasses();
  const gridClass = pickedClass("grid-class");
  // Conditional models, class "any": laid out by class, column j showing class j.
  const byClass = classes.length > 0 && gridClass === undefined;
  const columns = byClass ? classes.length : Number($("grid-columns").value);
  const tileScale = defaultScale(model, TARGET_TILE_PX);
  const body = jsonObject({
    count: JSON.stringify(count),
    seed: seedJson($("grid-seed").value),
    classes: byClass ? JSON.stringify(Array.from({ length: count }, (_, i) => i % classes.length)) : undefined,
    class: gridClass,
    columns: JSON.stringify(columns),
    truncation: JSON.stringify(Number($("truncation").value)),
    scale: JSON.stringify(tileScale),
  });
  return run("grid", "grid-figure", "grid-error", async (signal) => {
    const { data, headers, latencyMs } = await api(modelPath("/generate/batch"), {
      method: "POST", body, accept: "image/png", as: "blob", signal,
    });
    const seeds = (headers.get("X-Seeds") ?? "").split(",").filter(Boolean);
    state.gridSeeds = seeds;
    state.gridColumns = Math.min(columns, seeds.length || 1);
    state.gridClasses = (headers.get("X-Classes") ?? "").split(",").filter(Boolean);
    const img = $("grid");
    showBlob(img, data);
    img.dataset.seeds = seeds.join(",");
    img.dataset.classes = state.gridClasses.join(",");
    img.alt = `Grid of ${seeds.length} images, seeds ${seeds[0]} to ${seeds.at(-1)}`;
    const layout = byClass
      ? ` \u00b7 columns: ${classes.join(", ")}`
      : gridClass !== undefined ? ` \u00b7 all ${classes[Number(gridClass)]}` : "";
    $("grid-caption").textContent =
      `seeds ${seeds[0]}\u2013${seeds.at(-1)}${layout} \u00b7 ${formatMs(latencyMs)} round trip \u00b7 click one to open it`;
  });
}

function openGridTile(event) {
  const img = $("grid");
  if (!state.gridSeeds.length || !img.naturalWidth) return;
  const rows = Math.ceil(state.gridSeeds.length / state.gridColumns);
  const column = Math.floor((event.offsetX / img.clientWidth) * state.gridColumns);
  const row = Math.floor((event.offsetY / img.clientHeight) * rows);
  const index = row * state.gridColumns + column;
  const seed = state.gridSeeds[index];
  if (seed === undefined) return;
  $("seed").value = seed;
  if (modelClasses().length) $("class").value = state.gridClasses[index] ?? "";
  seedChanged();
  $("single").scrollIntoView({ behavior: "smooth" });
}

// -- interpolation -----------------------------------------------------------------------

function interpolationBody(scale, extra = {}) {
  return jsonObject({
    start: jsonObject({
      seed: seedJson($("interp-start").value), class: pickedClass("interp-start-class"),
    }),
    end: jsonObject({ seed: seedJson($("interp-end").value), class: pickedClass("interp-end-class") }),
    steps: JSON.stringify(Number($("interp-steps").value)),
    method: JSON.stringify($("interp-method").value),
    truncation: JSON.stringify(Number($("truncation").value)),
    scale: JSON.stringify(scale),
    ...extra,
  });
}

function renderInterpolation() {
  if (!state.model) return;
  stopPlayer();
  const frameBody = interpolationBody(defaultScale(state.model, TARGET_IMAGE_PX));
  const stripBody = interpolationBody(defaultScale(state.model, TARGET_TILE_PX));
  setFigureState("strip-figure", "loading");
  return run("interp", "interp-figure", "interp-error", async (signal) => {
    const [frames, strip] = await Promise.all([
      api(modelPath("/interpolate"), { method: "POST", body: frameBody, signal }),
      api(modelPath("/interpolate"), {
        method: "POST", body: stripBody, accept: "image/png", as: "blob", signal,
      }),
    ]);
    const { data, latencyMs } = frames;
    state.frames = data.frames.map((frame) => `data:image/png;base64,${frame.png_base64}`);
    const forward = state.frames.map((_, index) => index);
    state.frameOrder = [...forward, ...forward.slice(1, -1).reverse()];
    state.frameCursor = 0;
    const position = $("interp-position");
    Object.assign(position, { max: state.frames.length - 1, value: 0, disabled: false });
    $("interp-play").disabled = false;
    $("interp-gif").disabled = false;
    showFrame(0);
    showBlob($("interp-strip"), strip.data);
    setFigureState("strip-figure", "ready");
    const classes = data.start_class ? ` (${data.start_class} \u2192 ${data.end_class})` : "";
    $("interp-caption").textContent =
      `${data.method}, seeds ${$("interp-start").value.trim()} \u2192 ${$("interp-end").value.trim()}${classes}, ` +
      `${data.steps} frames \u00b7 ${formatMs(latencyMs)} round trip`;
    if (!window.matchMedia("(prefers-reduced-motion: reduce)").matches) startPlayer();
  });
}

function showFrame(index) {
  const img = $("interp-frame");
  img.src = state.frames[index];
  img.dataset.frame = String(index);
  img.alt = `Interpolation frame ${index + 1} of ${state.frames.length}`;
  $("interp-position").value = String(index);
  $("interp-position-value").textContent = `${index + 1} / ${state.frames.length}`;
}

function startPlayer() {
  if (state.timer || state.frames.length < 2) return;
  state.timer = setInterval(() => {
    state.frameCursor = (state.frameCursor + 1) % state.frameOrder.length;
    showFrame(state.frameOrder[state.frameCursor]);
  }, FRAME_MS);
  $("interp-play").textContent = "Pause";
  $("interp-play").setAttribute("aria-pressed", "true");
}

function stopPlayer() {
  clearInterval(state.timer);
  state.timer = null;
  $("interp-play").textContent = "Play";
  $("interp-play").setAttribute("aria-pressed", "false");
}

async function saveGif() {
  const button = $("interp-gif");
  const signal = lanes.gif.next();
  button.disabled = true;
  try {
    const body = interpolationBody(defaultScale(state.model, TARGET_IMAGE_PX), {
      frame_duration_ms: JSON.stringify(FRAME_MS),
    });
    const { data } = await api(modelPath("/interpolate"), {
      method: "POST", body, accept: "image/gif", as: "blob", signal,
    });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(data);
    link.download = `${state.model.name}-${$("interp-start").value.trim()}-${$("interp-end").value.trim()}.gif`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    showError("interp-error", null);
  } catch (error) {
    if (!isAbort(error)) showError("interp-error", error);
  } finally {
    button.disabled = false;
  }
}

// -- wiring ------------------------------------------------------------------------------

function isTyping(target) {
  return target instanceof HTMLInputElement && !["range", "button", "checkbox"].includes(target.type)
    || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement;
}

function init() {
  const keyField = $("api-key");
  keyField.value = sessionStorage.getItem(KEY_STORAGE) ?? "";
  keyField.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, keyField.value.trim());
    loadModels();
  });
  $("model").addEventListener("change", (event) => selectModel(event.target.value));

  $("seed").addEventListener("input", () => seedChanged({ now: false }));
  $("seed").addEventListener("keydown", (event) => {
    if (event.key === "Enter") seedChanged();
  });
  $("random-seed").addEventListener("click", rollSeed);
  $("truncation").addEventListener("input", () => {
    updateOutputs();
    renderImageSoon();
  });
  $("truncation").addEventListener("change", () => {
    renderGrid();
    renderInterpolation();
  });
  $("scale").addEventListener("input", () => {
    updateOutputs();
    renderImageSoon();
  });
  $("reset-latent").addEventListener("click", () => seedChanged());
  $("class").addEventListener("change", () => renderImage());
  $("grid-class").addEventListener("change", () => renderGrid());
  for (const id of ["interp-start-class", "interp-end-class"]) {
    $(id).addEventListener("change", () => renderInterpolation());
  }

  $("grid-form").addEventListener("submit", (event) => {
    event.preventDefault();
    renderGrid();
  });
  $("grid").addEventListener("click", openGridTile);

  $("interp-form").addEventListener("submit", (event) => {
    event.preventDefault();
    renderInterpolation();
  });
  $("interp-play").addEventListener("click", () => (state.timer ? stopPlayer() : startPlayer()));
  $("interp-position").addEventListener("input", (event) => {
    stopPlayer();
    const index = Number(event.target.value);
    state.frameCursor = index;
    showFrame(index);
  });
  $("interp-gif").addEventListener("click", saveGif);

  document.addEventListener("keydown", (event) => {
    if ((event.key === "r" || event.key === "R") && !event.ctrlKey && !event.metaKey
        && !event.altKey && !isTyping(event.target)) {
      rollSeed();
    }
  });
  loadModels();
}

init();
