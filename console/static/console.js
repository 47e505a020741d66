// hitl console: keyboard shortcuts, queue selection, canned responses, giving a claim back on leave.
// Loaded from our own origin; the Content-Security-Policy allows no inline script.
(function () {
  "use strict";

  function typing(target) {
    if (!target) return false;
    var tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("#queue-rows tr[data-href]"));
  }

  var selected = null; // the review id picked with j/k; kept across live refreshes of the queue

  function select(index) {
    var all = rows();
    if (!all.length) return;
    index = Math.max(0, Math.min(index, all.length - 1));
    all.forEach(function (row) { row.classList.remove("selected"); row.removeAttribute("aria-selected"); });
    all[index].classList.add("selected");
    all[index].setAttribute("aria-selected", "true");
    all[index].scrollIntoView({ block: "nearest" });
    selected = all[index].id;
  }

  function current() {
    var all = rows();
    for (var i = 0; i < all.length; i++) if (all[i].id === selected) return i;
    return -1;
  }

  function press(key) {
    var button = document.querySelector('#decide-form button[data-key="' + key + '"]');
    if (button) button.click();
  }

  function toolMode() {
    var form = document.getElementById("decide-form");
    return !!form && form.dataset.mode === "tool_calls";
  }

  function focusAnswer(override) {
    // A held tool call is edited in its arguments; its text box is for an override only.
    var first = document.querySelector("#decide-form textarea.arguments");
    if (!override && first) { first.focus(); return; }
    var answer = document.getElementById("answer");
    if (!answer) return;
    if (override) {
      answer.value = "";
      answer.dispatchEvent(new Event("input", { bubbles: true }));
    }
    answer.focus();
  }

  // Canned response N (0-based): chosen in the select, its text in the answer box, the box focused; from there
  // Ctrl+Enter sends it as an override. False when there is no such response.
  function canned(index) {
    var select = document.getElementById("canned");
    var answer = document.getElementById("answer");
    if (!select || !answer || index + 1 >= select.options.length) return false;
    select.selectedIndex = index + 1; // option 0 is "None"
    answer.value = select.options[index + 1].dataset.text || "";
    answer.dispatchEvent(new Event("input", { bubbles: true }));
    answer.focus();
    return true;
  }

  function cannedChosen() {
    var select = document.getElementById("canned");
    return !!select && select.value !== "";
  }

  // An earlier decision's answer as the draft: in the answer box, the diff updated, the box focused.
  function takeDraft(button) {
    var answer = document.getElementById("answer");
    if (!button || !answer) return false;
    answer.value = button.dataset.draft || "";
    answer.dispatchEvent(new Event("input", { bubbles: true }));
    answer.focus();
    return true;
  }

  function guidelines() {
    var dialog = document.getElementById("guidelines-dialog");
    if (!dialog) { window.location.href = "/console/guidelines"; return; }
    if (!dialog.open) dialog.showModal();
  }

  function cheatsheet() {
    var dialog = document.getElementById("cheatsheet");
    if (dialog && !dialog.open) dialog.showModal();
  }

  // Shift+1 to Shift+9 tick or untick the reason tags, in their order on the page.
  document.addEventListener("keydown", function (event) {
    if (!event.shiftKey || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var digit = /^Digit([1-9])$/.exec(event.code || "");
    var box = digit && document.querySelector('#decide-form input[data-tag-key="' + digit[1] + '"]');
    if (!box) return;
    box.checked = !box.checked;
    event.preventDefault();
    event.stopImmediatePropagation();
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape" && typing(event.target)) { event.target.blur(); return; }
    if (typing(event.target)) return; // never while typing
    var page = document.body.dataset.page;
    var handled = true;
    switch (event.key) {
      case "?": cheatsheet(); break;
      case "j": if (page === "queue") select(current() + 1); else handled = false; break;
      case "k": if (page === "queue") select(Math.max(0, current() - 1)); else handled = false; break;
      case "Enter": {
        var row = selected && document.getElementById(selected);
        if (page === "queue" && row) window.location.href = row.dataset.href; else handled = false;
        break;
      }
      case "n": {
        var next = document.getElementById("next-form");
        if (next) next.submit(); else handled = false;
        break;
      }
      case "a": if (page === "review") press("a"); else handled = false; break;
      case "e": if (page === "review") focusAnswer(false); else handled = false; break;
      case "o": if (page === "review") focusAnswer(true); else handled = false; break;
      case "q": {
        var back = document.getElementById("back");
        if (page === "review" && back) window.location.href = back.getAttribute("href"); else handled = false;
        break;
      }
      case "1": case "2": case "3": case "4": case "5": case "6": case "7": case "8": case "9":
        if (page === "review") handled = canned(Number(event.key) - 1); else handled = false;
        break;
      case "p": if (page === "review") handled = takeDraft(document.querySelector("#precedents [data-draft]")); else handled = false; break;
      case "g": guidelines(); break;
      case "u": {
        var undoing = document.getElementById("undo-form");
        if (undoing) undoing.submit(); else handled = false;
        break;
      }
      case "s": {
        var comment = document.getElementById("comment");
        if (page === "review" && comment) { comment.placeholder = "Why escalate? Then press Escalate."; comment.focus(); }
        else handled = false;
        break;
      }
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });

  // In a text field, Ctrl/Cmd+Enter sends: an edit from the answer box (an override when the answer is a tool
  // call, whose edits are its arguments), an edit from a tool call's arguments, an escalation from the reason box.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    // A chosen canned response is an override, not an edit of the model's answer.
    if (event.target.id === "answer") { event.preventDefault(); press(toolMode() || cannedChosen() ? "o" : "e"); }
    if (event.target.classList.contains("arguments")) { event.preventDefault(); press("e"); }
    if (event.target.id === "comment") { event.preventDefault(); press("s"); }
  });

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-cheatsheet]")) { cheatsheet(); return; }
    var draft = event.target.closest("[data-draft]");
    if (draft) { takeDraft(draft); return; }
    if (event.target.id === "pick-all") {
      // Select every review shown: with the filters, that is the filtered set.
      document.querySelectorAll('#queue-rows input[name="review_id"]').forEach(function (box) {
        box.checked = event.target.checked;
      });
      return;
    }
    var row = event.target.closest("#queue-rows tr[data-href]");
    if (row && !event.target.closest("a") && !event.target.closest("td.pick")) window.location.href = row.dataset.href;
  });

  // A canned response fills the answer box, so the agent sees (and the diff shows) what will be sent; choosing
  // "None" again gives the model's answer back to edit.
  document.addEventListener("change", function (event) {
    if (event.target.id !== "canned") return;
    var option = event.target.selectedOptions[0];
    var answer = document.getElementById("answer");
    if (option && option.dataset.text && answer) {
      answer.value = option.dataset.text;
      answer.dispatchEvent(new Event("input", { bubbles: true }));
    }
  });

  // Ages and countdowns tick every second: "arrived 42 s ago", "12 s before it gets the placeholder".
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-since]").forEach(function (node) {
      var seconds = Math.max(0, Math.floor(now - Number(node.dataset.since)));
      node.textContent = seconds < 60 ? seconds + "s" : seconds < 3600 ? Math.floor(seconds / 60) + "m"
        : Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m";
    });
    document.querySelectorAll("[data-deadline], [data-countdown]").forEach(function (node) {
      var left = Math.max(0, Math.round(Number(node.dataset.deadline || node.dataset.countdown) - now));
      node.textContent = String(left);
      var marker = node.closest("[data-waiting]");
      if (marker && left === 0) marker.classList.add("gone");
    });
  }
  window.setInterval(tick, 1000);

  // The alert: a waiting client has less than HITL_ALERT_SECONDS left before it gets the deadline outcome. The
  // title and the favicon say how many, and a short tone sounds once per client unless the agent turned it off.
  var plainTitle = document.title;
  var sounded = {};
  var audio = null;

  function soundOn() { return window.localStorage.getItem("hitl-sound") !== "off"; }

  function showSound() {
    var toggle = document.getElementById("sound-toggle");
    if (toggle) toggle.textContent = soundOn() ? "Sound on" : "Sound off";
  }

  function tone() {
    var Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    try {
      audio = audio || new Context();
      var oscillator = audio.createOscillator();
      var gain = audio.createGain();
      oscillator.frequency.value = 880;
      gain.gain.value = 0.08;
      oscillator.connect(gain);
      gain.connect(audio.destination);
      oscillator.start();
      oscillator.stop(audio.currentTime + 0.2);
    } catch (error) { /* a browser that refuses audio still shows the title and the badge */ }
    document.body.dataset.tones = String(Number(document.body.dataset.tones || 0) + 1);
  }

  function favicon(count) {
    var link = document.getElementById("favicon");
    if (!link) return;
    if (!count) { link.href = link.dataset.plain || link.href; return; }
    link.dataset.plain = link.dataset.plain || link.href;
    var canvas = document.createElement("canvas");
    canvas.width = canvas.height = 32;
    var pen = canvas.getContext("2d");
    pen.fillStyle = "#c62828";
    pen.beginPath(); pen.arc(16, 16, 16, 0, 2 * Math.PI); pen.fill();
    pen.fillStyle = "#fff"; pen.font = "bold 20px sans-serif"; pen.textAlign = "center"; pen.textBaseline = "middle";
    pen.fillText(count > 9 ? "9+" : String(count), 16, 17);
    link.href = canvas.toDataURL("image/png");
  }

  function alarm() {
    var limit = Number(document.body.dataset.alertSeconds || 0);
    var now = Date.now() / 1000;
    var urgent = [];
    document.querySelectorAll("[data-deadline]").forEach(function (node) {
      var left = Number(node.dataset.deadline) - now;
      if (left > 0 && left <= limit) urgent.push(node);
    });
    document.body.classList.toggle("alerting", urgent.length > 0);
    document.title = urgent.length ? "(" + urgent.length + ") about to time out · " + plainTitle : plainTitle;
    favicon(urgent.length);
    urgent.forEach(function (node) {
      var row = node.closest("[id]");
      var key = (row ? row.id : "") + "@" + node.dataset.deadline;
      if (sounded[key]) return;
      sounded[key] = true;
      if (soundOn()) tone();
    });
  }
  window.setInterval(alarm, 1000);
  document.addEventListener("DOMContentLoaded", function () { showSound(); alarm(); });
  document.addEventListener("click", function (event) {
    if (event.target.id !== "sound-toggle") return;
    window.localStorage.setItem("hitl-sound", soundOn() ? "off" : "on");
    showSound();
  });

  // The reviews ticked for a bulk action, kept across live refreshes of the queue.
  var picked = {};
  document.addEventListener("change", function (event) {
    if (event.target.name === "review_id") picked[event.target.value] = event.target.checked;
    if (event.target.id === "pick-all") {
      document.querySelectorAll('#queue-rows input[name="review_id"]').forEach(function (box) {
        picked[box.value] = box.checked;
      });
    }
  });

  // After a live refresh of the queue, keep the agent's place and its ticks.
  document.addEventListener("htmx:afterSwap", function () {
    if (document.body.dataset.page !== "queue") return;
    document.querySelectorAll('#queue-rows input[name="review_id"]').forEach(function (box) {
      if (picked[box.value]) box.checked = true;
    });
    if (!selected) return;
    var index = current();
    if (index >= 0) select(index);
  });

  // An error toast goes away when clicked.
  document.addEventListener("click", function (event) {
    var toast = event.target.closest && event.target.closest("#toast");
    if (toast) toast.hidden = true;
  });

  // Leaving a review gives its claim back at once instead of waiting for the lease to run out.
  window.addEventListener("pagehide", function () {
    var claim = document.querySelector("#claim[data-release]");
    var token = document.querySelector('input[name="csrftoken"]');
    if (!claim || !token || !navigator.sendBeacon) return;
    // URL-encoded, like every console form (the console refuses multipart bodies).
    navigator.sendBeacon(claim.dataset.release, new URLSearchParams({ csrftoken: token.value }));
  });
})();
