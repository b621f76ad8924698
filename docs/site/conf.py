# Sphinx configuration of the fleetmaint.libvirt documentation site (make docs), from antsibull-docs sphinx-init.
# pylint: disable=invalid-name

project = "fleetmaint.libvirt"
copyright = "fleetmaint.libvirt contributors"  # pylint: disable=redefined-builtin
title = "fleetmaint.libvirt"
html_short_title = "fleetmaint.libvirt"
html_title = "fleetmaint.libvirt documentation"

extensions = ["sphinx.ext.autodoc", "sphinx_antsibull_ext", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
pygments_style = "ansible"
highlight_language = "YAML+Jinja"
html_theme = "sphinx_ansible_theme"
html_show_sphinx = False
display_version = False
html_use_smartypants = True
html_use_modindex = False
html_use_index = False
html_copy_source = False
default_role = "any"

# The build runs offline: references into docs.ansible.com (intersphinx) cannot resolve, and the user guide's
# links to files outside the site (README.md, sources) are not pages. Those warnings are expected; every other
# warning fails the build (-W).
suppress_warnings = ["ref.ref", "ref.envvar", "ref.any", "myst.xref_missing", "myst.header"]
