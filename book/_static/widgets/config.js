// Loaded between require.js and html-manager/embed-amd.js on pages with widgets. The widget
// manager loads its fonts relative to the URL of each of its modules, and any widget module it
// lacks from a CDN; point all of them at this folder, so that a page asks no other host.
(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "") + "html-manager/";
  var modules = ["base", "base7", "controls", "controls7", "html-manager", "html-manager/dist/libembed-amd"];
  var paths = {};
  modules.forEach(function (name) { paths["@jupyter-widgets/" + name] = here + name.split("/").pop(); });
  require.config({ paths: paths });
  document.currentScript.setAttribute("data-jupyter-widgets-cdn", here + "missing/");
})();

// The widget manager typesets widget labels with MathJax 2's MathJax.Hub.Queue whenever a page
// has MathJax; the book's MathJax is version 3, which has no Hub, and without this the call
// throws on every page that has both widgets and equations. Give MathJax 3 the one call the
// manager makes, mapped onto its own typesetting, whether it loads before or after this file.
(function () {
  function addHub(mathjax) {
    if (mathjax && mathjax.version && !mathjax.Hub) {
      mathjax.Hub = {
        Queue: function (job) {
          var element = job && job[2];
          if (element && mathjax.startup && mathjax.typesetPromise) {
            mathjax.startup.promise.then(function () { return mathjax.typesetPromise([element]); });
          }
        },
      };
    }
    return mathjax;
  }
  var current = addHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = addHub(value); },
  });
})();
