() => {
  // Keyboard shortcuts of the page's actions: keys click buttons by elem_id. Ignored while
  // typing in a text field (Escape leaves the field; Enter in the label field accepts, see
  // below). The canvas's own keys (tools, zoom, view options, classes: P N B S R E + - 0 [ ]
  // V O L C 1-9 ? Tab Space) are in app/ui/canvas/canvas.js; the two sets never overlap.
  const clickId = (id) => { const el = document.getElementById(id); if (el) { el.click(); } };
  const keys = {
    'enter': () => clickId('accept'), 'a': () => clickId('accept'), 'escape': () => clickId('clear'),
    'y': () => clickId('review-accept'), 'x': () => clickId('review-reject'),
    'j': () => clickId('review-next'), 'arrowright': () => clickId('review-next'),
    'k': () => clickId('review-prev'), 'arrowleft': () => clickId('review-prev'),
    'm': () => clickId('merge'), 'h': () => clickId('hide'),
    'delete': () => clickId('delete'), 'backspace': () => clickId('delete'),
    '.': () => clickId('image-next'), 'pagedown': () => clickId('image-next'),
    ',': () => clickId('image-prev'), 'pageup': () => clickId('image-prev'),
    'd': () => clickId('image-done'),
  };
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const typing = t && ((t.tagName === 'INPUT' && !['radio', 'checkbox', 'range', 'button'].includes(t.type))
                         || t.tagName === 'TEXTAREA' || t.isContentEditable);
    if (typing) {
      if (e.key === 'Escape') { t.blur(); }
      // Enter in the label field accepts (its submit event); then the field lets go, so the
      // next keys are shortcuts again and never land in the label. (Blurred after the key's
      // own events: the field submits on keypress.)
      else if (e.key === 'Enter' && t.closest('#label')) { setTimeout(() => t.blur(), 0); }
      return;
    }
    if (e.altKey || e.metaKey) { return; }
    const k = e.key.toLowerCase();
    if (e.ctrlKey) {
      if (k === 'z' && !e.shiftKey) { clickId('undo'); e.preventDefault(); }
      else if (k === 'y' || (k === 'z' && e.shiftKey)) { clickId('redo'); e.preventDefault(); }
      return;
    }
    if (keys[k]) { keys[k](); e.preventDefault(); }
  });
}
