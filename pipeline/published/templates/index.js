// The catalogue page's script (no framework, no request): copy buttons and the filter.
// What a button copies is the text of the <code> beside it, read as text (never as markup),
// so the page shows exactly what is copied.
"use strict";

function selectText(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// The fallback where navigator.clipboard is missing (a page served over plain http from
// anything but localhost is not a secure context): select the text and ask the browser to
// copy the selection; when even that is refused the text stays selected for Ctrl+C.
function copyBySelection(node) {
  selectText(node);
  try {
    return document.execCommand("copy");
  } catch (e) {
    return false;
  }
}

function done(button, copied) {
  button.textContent = copied ? "copied" : "press Ctrl+C";
  button.classList.toggle("copied", copied);
  setTimeout(() => {
    button.textContent = "copy";
    button.classList.remove("copied");
  }, 1500);
}

function copy(button) {
  const code = button.parentElement.querySelector("code");
  const text = code.textContent;
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(
      () => done(button, true),
      () => done(button, copyBySelection(code)));
  } else {
    done(button, copyBySelection(code));
  }
}

// Every word typed must occur in a cell's words (image, tag, OS, compiler, MPI, CUDA,
// commands); a grid with no cell left is hidden.
function filter(query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  for (const section of document.querySelectorAll("section.image")) {
    let shown = 0;
    for (const cell of section.querySelectorAll(".cell")) {
      const hay = cell.dataset.search;
      const match = words.every((w) => hay.includes(w));
      cell.hidden = !match;
      shown += match ? 1 : 0;
    }
    section.hidden = shown === 0;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (button) copy(button);
});

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("filter");
  if (!input) return;
  input.addEventListener("input", () => filter(input.value));
  if (input.value) filter(input.value);
});
