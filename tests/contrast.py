"""Text contrast as a reader sees it, for browser tests: WCAG 2 ratios in a real page."""

# [text, contrast ratio] of each visible piece of text inside the elements ``selector`` picks, the text's
# colour and the background behind it each composed over what lies under them (WCAG 2 relative luminance)
CONTRASTS_JS = """(selector) => {
  const rgba = (c) => { const p = c.match(/rgba?\\(([^)]*)\\)/)[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
                        return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const backdrop = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    return layers.reverse().reduce((under, top) => over(top, under), [255, 255, 255, 1]);
  };
  const lum = (c) => { const l = c.slice(0, 3).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
                       return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2]; };
  const out = [];
  for (const box of document.querySelectorAll(selector)) {
    for (const el of box.querySelectorAll('*')) {
      const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
      if (!own || !el.checkVisibility()) continue;
      const bg = backdrop(el), fg = over(rgba(getComputedStyle(el).color), bg);
      const [a, b] = [lum(fg) + 0.05, lum(bg) + 0.05];
      out.push([own.slice(0, 40), Math.max(a, b) / Math.min(a, b)]);
    }
  }
  return out;
}"""
