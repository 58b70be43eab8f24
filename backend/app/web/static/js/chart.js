// A line chart on a canvas, written for this page: train and eval loss on the left axis, learning
// rate on the right. Points arrive one at a time (from the event stream); what is drawn is
// downsampled to the canvas width, what is kept is not.

const PAD = { left: 56, right: 64, top: 12, bottom: 36 };

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** Per pixel column keep the first, lowest, highest and last point: the shape survives, the work is bounded. */
export function downsample(points, xToPx, width) {
  if (points.length <= width * 2) return points;
  const out = [];
  let column = null, first, low, high, last;
  const flush = () => {
    if (column === null) return;
    const bucket = [first, low, high, last].filter((p, i, all) => all.indexOf(p) === i);
    bucket.sort((a, b) => a[0] - b[0]);
    out.push(...bucket);
  };
  for (const point of points) {
    const px = Math.floor(xToPx(point[0]));
    if (px !== column) {
      flush();
      column = px; first = low = high = last = point;
    } else {
      if (point[1] < low[1]) low = point;
      if (point[1] > high[1]) high = point;
      last = point;
    }
  }
  flush();
  return out;
}

/** Tick values for [low, high]: about ``count`` steps of 1, 2 or 5 × 10^k, covering the range (integers when
 * ``integer``). */
export function niceTicks(low, high, count = 4, { integer = false } = {}) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count, power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw * 0.999);
  if (integer) step = Math.max(1, Math.round(step));
  const first = Math.ceil(low / step - 1e-9) * step, ticks = [];
  for (let v = first; v <= high + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** The value range an axis shows: its values with a 5 % margin, never below 0 when none is negative. */
export function axisRange(values) {
  let low = Math.min(...values), high = Math.max(...values);
  if (high === low) { high = low + (Math.abs(low) || 1) * 0.05; low -= (Math.abs(low) || 1) * 0.05; }
  const pad = (high - low) * 0.05, floor = Math.min(...values) >= 0 ? 0 : -Infinity;
  return [Math.max(floor, low - pad), high + pad];
}

export class LineChart {
  /**
   * @param canvas the <canvas> to draw on
   * @param series [{key, label, color (CSS variable), axis: "left" | "right", markers}]
   */
  constructor(canvas, series, { xLabel = "step", title = "" } = {}) {
    this.canvas = canvas;
    this.series = series.map((s) => ({ ...s, points: [] }));
    this.xLabel = xLabel;
    this.title = title;
    this.xMax = 0;
    this.appended = 0;   // points added at the end of a series
    this.replaced = 0;   // points dropped because a later attempt logged their step again
    this.draws = 0;
    this.drawnPoints = 0;
    this.lastAddAt = 0;   // performance.now() of the latest point and of the latest draw (for the bench)
    this.lastDrawAt = 0;
    this.pending = false;
    this.resize = new ResizeObserver(() => this.requestDraw());
    this.resize.observe(canvas);
  }

  /** Add (x, y) to series ``key``. A step at or before the series' last one starts over from there
   * (a resumed attempt re-logs the steps after its checkpoint): one point per step, never two. */
  add(key, x, y) {
    if (y === null || y === undefined || !isFinite(y)) return;
    const series = this.series.find((s) => s.key === key);
    const points = series.points;
    while (points.length && points[points.length - 1][0] >= x) {
      points.pop();
      this.replaced++;
    }
    points.push([x, y]);
    this.appended++;
    this.lastAddAt = performance.now();
    this.requestDraw();
  }

  setXMax(value) {
    if (value && value !== this.xMax) { this.xMax = value; this.requestDraw(); }
  }

  count(key) { return this.series.find((s) => s.key === key).points.length; }

  stats() {
    const counts = Object.fromEntries(this.series.map((s) => [s.key, s.points.length]));
    return { counts, appended: this.appended, replaced: this.replaced, draws: this.draws, drawnPoints: this.drawnPoints };
  }

  requestDraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  draw() {
    const canvas = this.canvas, ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const fg = cssVar("--fg"), muted = cssVar("--muted"), line = cssVar("--line");
    ctx.font = "12px system-ui, sans-serif";

    const all = this.series.flatMap((s) => s.points);
    const xMax = Math.max(this.xMax, ...all.map((p) => p[0]), 1);
    const xMin = Math.min(0, ...all.map((p) => p[0]));
    const plotW = width - PAD.left - PAD.right, plotH = height - PAD.top - PAD.bottom;
    const xToPx = (x) => PAD.left + ((x - xMin) / (xMax - xMin || 1)) * plotW;
    const range = (axis) => {
      const values = this.series.filter((s) => s.axis === axis).flatMap((s) => s.points.map((p) => p[1]));
      return values.length ? axisRange(values) : null;
    };
    const ranges = { left: range("left"), right: range("right") };
    const yToPx = (axis, y) => { const [low, high] = ranges[axis]; return PAD.top + plotH - ((y - low) / (high - low)) * plotH; };

    ctx.strokeStyle = line; ctx.fillStyle = muted; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(PAD.left, PAD.top); ctx.lineTo(PAD.left, PAD.top + plotH);
    ctx.lineTo(PAD.left + plotW, PAD.top + plotH); ctx.stroke();
    ctx.textAlign = "center";
    for (const x of niceTicks(xMin, xMax, 5, { integer: true })) {
      ctx.fillText(x.toLocaleString(), xToPx(x), PAD.top + plotH + 15);
    }
    ctx.fillText(this.xLabel, PAD.left + plotW / 2, height - 5);
    for (const axis of ["left", "right"]) {
      if (!ranges[axis]) continue;
      const [low, high] = ranges[axis];
      ctx.textAlign = axis === "left" ? "right" : "left";
      const xText = axis === "left" ? PAD.left - 6 : PAD.left + plotW + 6;
      for (const y of niceTicks(low, high, 4)) {
        const label = Math.abs(y) < 1e-2 && y !== 0 ? y.toExponential(1) : String(Number(y.toPrecision(3)));
        ctx.fillText(label, xText, yToPx(axis, y) + 4);
        if (axis === "left") {
          ctx.strokeStyle = line; ctx.globalAlpha = 0.5;
          ctx.beginPath(); ctx.moveTo(PAD.left, yToPx(axis, y)); ctx.lineTo(PAD.left + plotW, yToPx(axis, y)); ctx.stroke();
          ctx.globalAlpha = 1;
        }
      }
    }
    let drawn = 0;
    for (const s of this.series) {
      if (!s.points.length || !ranges[s.axis]) continue;
      const shown = downsample(s.points, xToPx, plotW);
      drawn += shown.length;
      ctx.strokeStyle = cssVar(s.color); ctx.fillStyle = cssVar(s.color);
      ctx.lineWidth = s.axis === "right" ? 1.25 : 2;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      shown.forEach((p, i) => { const x = xToPx(p[0]), y = yToPx(s.axis, p[1]); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
      ctx.stroke();
      ctx.setLineDash([]);
      if (s.markers || shown.length === 1) {
        for (const p of shown) { ctx.beginPath(); ctx.arc(xToPx(p[0]), yToPx(s.axis, p[1]), 3, 0, 2 * Math.PI); ctx.fill(); }
      }
    }
    this.drawnPoints = drawn;
    this.draws++;
    this.lastDrawAt = performance.now();
    const last = this.series.map((s) => s.points.length ? `${s.label} ${s.points[s.points.length - 1][1].toPrecision(4)} at ${this.xLabel} ${s.points[s.points.length - 1][0]}` : null).filter(Boolean);
    canvas.setAttribute("aria-label", `${this.title}: ${last.join("; ") || "no points yet"}`);
    canvas.dataset.points = String(all.length);
    ctx.fillStyle = fg;
  }

  legend() {
    const el = document.createElement("div");
    el.className = "legend";
    for (const s of this.series) {
      const item = document.createElement("span");
      item.style.setProperty("--swatch", `var(${s.color})`);
      item.textContent = `${s.label}${s.axis === "right" ? " (right axis)" : ""}`;
      el.append(item);
    }
    return el;
  }

  destroy() { this.resize.disconnect(); }
}
