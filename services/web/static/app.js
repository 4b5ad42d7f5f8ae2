// The web UI's behaviour (docs/ui.md): row menus with the keyboard, dialogs, the details
// popover's Escape, pausing the live polling of a row the operator is working in, and the
// pasted audience's line count. No inline script anywhere: this file is all there is.
(function () {
  "use strict";

  // ---------------------------------------------------------------- menus
  function items(menu) {
    return Array.prototype.slice.call(menu.querySelectorAll('[role="menuitem"]'));
  }
  function openMenu(button, focusLast) {
    closeMenus(button);
    var menu = document.getElementById(button.getAttribute("aria-controls"));
    if (!menu) return;
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    var list = items(menu);
    if (list.length) list[focusLast ? list.length - 1 : 0].focus();
  }
  function closeMenu(button, refocus) {
    var menu = document.getElementById(button.getAttribute("aria-controls"));
    if (menu) menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (refocus) button.focus();
  }
  function closeMenus(except) {
    document.querySelectorAll('.menu-button[aria-expanded="true"]').forEach(function (b) {
      if (b !== except) closeMenu(b, false);
    });
  }
  function buttonOf(menu) {
    return document.querySelector('[aria-controls="' + menu.id + '"]');
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    var button = target.closest && target.closest(".menu-button");
    if (button) {
      if (button.getAttribute("aria-expanded") === "true") closeMenu(button, false);
      else openMenu(button, false);
      return;
    }
    var opener = target.closest && target.closest("[data-dialog]");
    if (opener) {
      var menu = opener.closest('[role="menu"]');
      if (menu) closeMenu(buttonOf(menu), false);
      var dialog = document.getElementById(opener.getAttribute("data-dialog"));
      if (dialog && !dialog.open) dialog.showModal();
      return;
    }
    var closer = target.closest && target.closest("[data-close]");
    if (closer) {
      var d = closer.closest("dialog");
      if (d) d.close();
      return;
    }
    if (!(target.closest && target.closest('[role="menu"]'))) closeMenus(null);
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target.classList && target.classList.contains("menu-button")) {
      if (event.key === "ArrowDown" || event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openMenu(target, false);
      } else if (event.key === "ArrowUp") {
        event.preventDefault();
        openMenu(target, true);
      }
      return;
    }
    var menu = target.closest && target.closest('[role="menu"]');
    if (menu) {
      var list = items(menu);
      var i = list.indexOf(target);
      if (event.key === "ArrowDown") {
        event.preventDefault();
        list[(i + 1) % list.length].focus();
      } else if (event.key === "ArrowUp") {
        event.preventDefault();
        list[(i - 1 + list.length) % list.length].focus();
      } else if (event.key === "Home") {
        event.preventDefault();
        list[0].focus();
      } else if (event.key === "End") {
        event.preventDefault();
        list[list.length - 1].focus();
      } else if (event.key === "Escape") {
        event.preventDefault();
        closeMenu(buttonOf(menu), true);
      } else if (event.key === "Tab") {
        closeMenu(buttonOf(menu), false);
      }
      return;
    }
    if (event.key === "Escape" && target.classList && target.classList.contains("details-trigger")) {
      target.parentElement.classList.add("dismissed");
    }
  });
  document.addEventListener("focusout", function (event) {
    var t = event.target;
    if (t.classList && t.classList.contains("details-trigger")) {
      t.parentElement.classList.remove("dismissed");
    }
  });

  // ---------------------------------------------------------------- htmx
  // A live element (a row, the summary) is not replaced while the operator works in it: a
  // menu or dialog open, focus or the pointer inside, or an error shown next to its action.
  function busy(element) {
    if (element.contains(document.activeElement) && document.activeElement !== document.body) return true;
    if (element.matches(":hover")) return true;
    if (element.querySelector('.menu-button[aria-expanded="true"], dialog[open]')) return true;
    var error = element.querySelector(".action-error");
    return !!(error && error.textContent.trim());
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var element = event.detail.elt;
    if (element.hasAttribute && element.hasAttribute("data-live") && busy(element)) {
      event.preventDefault();
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var dialog = event.detail.elt.closest && event.detail.elt.closest("dialog");
    if (dialog && dialog.open) dialog.close();
    var menu = event.detail.elt.closest && event.detail.elt.closest('[role="menu"]');
    if (menu) closeMenu(buttonOf(menu), false);
    if (!event.detail.successful && event.detail.xhr && event.detail.xhr.status === 403) {
      var target = event.detail.target;
      if (target) target.textContent = "This page has expired: reload it and try again.";
    }
  });

  // ---------------------------------------------------------------- the audience's size
  function count(area) {
    var out = document.getElementById(area.getAttribute("data-count"));
    if (!out) return;
    var n = area.value.split(/\r?\n/).filter(function (l) {
      l = l.trim();
      return l && l.charAt(0) !== "#";
    }).length;
    out.textContent = String(n);
  }
  document.addEventListener("input", function (event) {
    if (event.target.hasAttribute && event.target.hasAttribute("data-count")) count(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-count]").forEach(count);
    if (location.hash === "#plan") {
      var later = document.getElementById("when-later");
      if (later) later.focus();
    }
  });
})();

// A row that arrived live replaces the empty-list notice.
document.addEventListener("htmx:afterSwap", function (event) {
  if (event.detail.target && event.detail.target.id === "rows" && event.detail.target.children.length) {
    document.querySelectorAll(".empty").forEach(function (p) { p.hidden = true; });
  }
});
