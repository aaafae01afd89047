// Loaded between require.js and the vendored widget manager (embed-amd.js) on pages with widgets.
(function () {
  // The manager fetches its icon fonts from the folder its AMD module appears to live in;
  // point that module name at this folder, where scripts/vendor_widget_fonts.sh put the fonts,
  // so nothing is requested from a CDN or from a folder that does not exist.
  var here = new URL(".", document.currentScript.src).href.replace(/\/$/, "");
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": here } });

  // ipywidgets 8 typesets widget labels with MathJax 2's API (MathJax.Hub.Queue); the book
  // loads MathJax 3, which has no Hub. Forward those calls to MathJax 3 once it has loaded
  // (all deferred scripts, MathJax included, have run when DOMContentLoaded fires).
  document.addEventListener("DOMContentLoaded", function () {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub || !mathjax.startup) return;
    mathjax.Hub = {
      Queue: function (command) {
        var element = command[2];
        mathjax.startup.promise.then(function () { return mathjax.typesetPromise([element]); });
      },
    };
  });
})();
