"""Each page's scripts once only.

With Sphinx 7, sphinx-thebe's inline configuration script (registered while documents are
read) reaches every page twice, and the second copy fails in the browser console with
"Identifier 'THEBE_JS_URL' has already been declared". This drops exact repeats.
"""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)  # after the others add theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
