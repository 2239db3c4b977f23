// Hotline dashboard: the only script. Pages work without it; it adds two things.
"use strict";

// Polling: an element with data-poll="URL" gets that URL's HTML every data-every ms (the
// live calls, a greeting being rendered). A reply holding [data-done] stops the polling.
// With data-refresh="#id", a change of the reply (a call started or ended) also reloads
// that part of the page, then and once more a tick later (an ended call's record is
// written just after it ends). Signed out (401), the page reloads, to the sign-in page; any
// other refusal (4xx) ends the polling. A hidden tab does not poll.
function poll(element) {
  const every = Number(element.dataset.every) || 2000;
  let last = element.innerHTML.trim(), again = false;
  const tick = async () => {
    if (document.hidden) { setTimeout(tick, every); return; }
    try {
      const reply = await fetch(element.dataset.poll,
                                {credentials: "same-origin", redirect: "error"});
      if (reply.status === 401) { location.reload(); return; }
      if (reply.status >= 400 && reply.status < 500) return;
      if (reply.ok) {
        const html = (await reply.text()).trim();
        const changed = html !== last;
        last = html;
        element.innerHTML = html;  // our own server's escaped HTML
        if (element.querySelector("[data-done]")) return;
        if (element.dataset.refresh && (changed || again)) refresh(element.dataset.refresh);
        again = changed;
      }
    } catch (error) { /* offline for a moment: try again */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

async function refresh(selector) {
  const reply = await fetch(location.href, {credentials: "same-origin"});
  if (!reply.ok) return;
  const fresh = new DOMParser().parseFromString(await reply.text(), "text/html");
  const source = fresh.querySelector(selector), target = document.querySelector(selector);
  if (source && target) target.innerHTML = source.innerHTML;
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
