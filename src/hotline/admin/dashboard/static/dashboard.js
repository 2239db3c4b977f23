// Hotline dashboard: the only script. Pages work without it; it adds two things.
"use strict";

// Polling: an element with data-poll="URL" gets that URL's HTML every data-every ms (the
// live calls, a greeting being rendered). A reply holding [data-done] stops the polling.
function poll(element) {
  const every = Number(element.dataset.every) || 2000;
  const tick = async () => {
    try {
      const reply = await fetch(element.dataset.poll, {credentials: "same-origin"});
      if (reply.ok) {
        element.innerHTML = await reply.text();  // our own server's escaped HTML
        if (element.querySelector("[data-done]")) return;
      }
    } catch (error) { /* offline for a moment: try again */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}
document.querySelectorAll("[data-poll]").forEach(poll);

// Seeking: a transcript turn with data-seek="seconds" plays the recording from there.
function seek(event) {
  const turn = event.target.closest("[data-seek]");
  const audio = document.getElementById("recording");
  if (!turn || !audio) return;
  if (event.type === "keydown" && event.key !== "Enter" && event.key !== " ") return;
  event.preventDefault();
  audio.currentTime = Number(turn.dataset.seek);
  audio.play();
}
document.addEventListener("click", seek);
document.addEventListener("keydown", seek);
