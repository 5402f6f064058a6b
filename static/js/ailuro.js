// Small page behaviours that the Content-Security-Policy (script-src 'self') allows: no inline
// handlers anywhere, so confirmations are declared with data-confirm on a button or form.
document.addEventListener("submit", (event) => {
  const message = (event.submitter && event.submitter.dataset.confirm) || event.target.dataset.confirm;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});
