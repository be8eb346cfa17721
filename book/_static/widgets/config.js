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
