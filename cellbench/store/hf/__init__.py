"""Hugging Face ``datasets`` export and import of canonical stores, bit-exact both ways.

A canonical store (:mod:`cellbench.store.zarr_store`) becomes a :class:`datasets.DatasetDict`
with one :class:`datasets.Dataset` per split and declared :class:`datasets.Features`
(:func:`to_hf`), or Parquet shards on disk (:func:`write_parquet`); a Hugging Face dataset (a
Parquet folder, a ``save_to_disk`` folder or a ``DatasetDict`` object) becomes a canonical store
again (:func:`plan_import`). Importing a cellbench export rebuilds a store with the *same digest*
(:attr:`~cellbench.store.zarr_store.DatasetStore.checksum`, content based), and the import checks
it. Both directions stream: one batch of rows (at most :data:`~.layout.ROW_GROUP_BYTES` of
arrays, or one sample if it is larger) is in memory at a time.

Rows and columns
----------------
One row per sample. Every split declares the *same* features, because ``load_dataset`` and
``push_to_hub`` require one schema per configuration.

======================== ========================================== ==============================
column                   feature                                    meaning
======================== ========================================== ==============================
``id``                   ``Value("string")``                        sample id
``split``                ``Value("string")``                        ``train``, ``val`` or ``test``
``label``                ``ClassLabel(names=...)`` (``Value         class index, -1 = no label
                         ("int64")`` if the store has no class      (classification stores only)
                         table)
``image``                array field (see below)                    input image with axes ``axes``
``instances``            array field                                instance ids (``axes`` minus c)
``semantic``             array field                                class per pixel
``target``               array field                                target fluorescence (c[,z],y,x)
``target_channel_names`` ``List(Value("string"))``                  names of the target channels
``tracks``               ``Array2D((None, 4), "int64")``            CTC table: track_id, start,
                                                                    end, parent
``axes``                 ``Value("string")``                        ``cyx``, ``czyx``, ``tcyx`` ...
``channel_names``        ``List(Value("string"))``                  one per image channel
``pixel_size``           ``{t, z, y, x: Value("float64")}``         um (z, y, x) and s (t); null
                                                                    for axes the image lacks
``metadata``             ``{<column>: Value(string | int64 |        the store's samples table,
                         float64 | bool)}``                         raw (``""`` / NaN = missing)
``table_row``            ``Value("int64")``                         row in the store's table, so
                                                                    the import restores its order
======================== ========================================== ==============================

Array fields
------------
Arrays keep their dtype and shape; nothing goes through 8-bit PIL ``Image`` features (microscopy
is 16-bit, float and multichannel). The encoding of each field is chosen once per dataset from
the store manifest (shapes and dtypes only, no pixel is read):

``array``
    ``Array2D`` .. ``Array5D(shape, dtype)`` when every sample has the field, with one dtype and
    one shape, or one shape except the first dimension (declared ``None``, the only dimension
    ``datasets`` allows to vary), and fewer than 2**31 elements per array (Arrow's nested lists
    have 32-bit offsets). Track tables always use ``Array2D((None, 4), "int64")``.
``flat``
    ``LargeList(Value(dtype))`` holding the C-order values, plus ``<field>_shape``
    (``List(Value("int64"))``), when shapes vary in more than the first dimension (e.g. images of
    different sizes in one dataset) or when some samples lack the field (both columns null).
``bytes``
    ``Value("large_binary")`` (little-endian C-order bytes) plus ``<field>_dtype``
    (``Value("string")``, e.g. ``<u2``) and ``<field>_shape``, only when the samples of one field
    differ in dtype, the one case a single declared dtype cannot represent exactly.

Dataset-level metadata
----------------------
``DatasetInfo`` survives ``save_to_disk`` but not Parquet (Parquet shards carry only the
features), so the cellbench metadata is one JSON object (:class:`ExportPlan.metadata`: HF layout
version, store format version, source store digest, card snapshot, class tables, the store's
fields/axes/metadata columns/split counts, array encodings and the declared features) kept in
three places:

* ``cellbench.json`` next to the data (export folder root; Hub repository root);
* the key-value metadata (key ``cellbench``) of every Parquet shard :func:`write_parquet` writes,
  so shards copied elsewhere still carry it;
* ``DatasetInfo.description`` of every split of :func:`to_hf`'s ``DatasetDict``, after the line
  :data:`DESCRIPTION_MARKER` (survives ``save_to_disk``). ``DatasetInfo`` also carries the
  card's citation, homepage and license.

The ``README.md`` dataset card (:func:`dataset_card`) is generated from the same JSON.

Folder layout written by :func:`write_parquet`::

    <dest>/README.md                               card; its ``configs`` map splits to folders
    <dest>/cellbench.json                          the metadata JSON
    <dest>/<split>/<split>-00000-of-00002.parquet  zstd shards of at most ``max_shard_size``,
                                                   row groups of at most 64 MiB of arrays

``datasets.load_dataset("<dest>")`` reads it as a ``DatasetDict``.

Import
------
:class:`HFSource` opens a ``save_to_disk`` folder (``dataset_dict.json`` or ``state.json``), a
folder of Parquet files (split from a ``<split>/`` folder or a ``<split>-*.parquet`` name, as in
this exporter's and the Hub's layouts; a folder without any split name is one ``train`` split),
or a ``DatasetDict``/``Dataset`` object. A cellbench export is recognised by its metadata JSON;
its columns are checked against the declared features (every missing, unexpected or retyped
column is reported at once), rows are merged back into table order, and the rebuilt store's
digest must equal the exported one (unless the id or version is overridden, which changes the
card and therefore the digest).

A foreign dataset needs a :class:`ColumnMapping`: the task, id, version and which columns hold
the image, the class label or label image, the target, the sample id and the metadata. Image
columns may be ``Array2D``..``Array5D``, nested ``List`` of numbers, or ``Image`` (decoded with
the PNG/TIFF bit depth kept: 16-bit stays ``uint16``); ``axes`` says their axis order (default
``yx`` for 2-D, ``cyx`` for 3-D arrays and ``yxc`` for 3-D ``Image`` data) and they are transposed
to cellbench's ``[t,]c[,z],y,x``.

What depends on the task is the task's own (its package's ``hf.py``, an
:class:`~.task_columns.HFTaskColumns` found by :meth:`cellbench.tasks.base.Task.hf_columns`): the
Hub task category on exported cards, which columns a foreign import needs, how the label column
becomes ground truth (class label and class table, label image), and whether foreign datasets can
be imported for the task at all (tracking's cannot: there is no standard track table column).
The exporter and importer ask it and never compare task names.

Modules
-------
The package follows the two directions of the conversion; everything below is re-exported here.

======================= ========================================================================
module                  holds
======================= ========================================================================
:mod:`.layout`          layout version, file and key names, array fields, split aliases, limits
:mod:`.plan`            array encodings (:func:`choose_encoding`) and :class:`ExportPlan`
:mod:`.to_arrow`        NumPy -> Arrow: export rows as Arrow tables of the declared features
:mod:`.export`          :func:`write_parquet`, :func:`to_hf`, :func:`metadata_from_description`
:mod:`.card`            the ``README.md`` dataset card (:func:`dataset_card`)
:mod:`.hub`             :func:`push_to_hub`, :func:`hub_files`, :class:`HubError`
:mod:`.source`          reading HF datasets: :class:`HFSource`, :class:`HFSplit`,
                        :func:`detect_source`
:mod:`.from_arrow`      Arrow -> NumPy: record batches decoded into per-row arrays
:mod:`.importer`        :class:`ColumnMapping`, :func:`plan_import`, :class:`HFImport`
:mod:`.task_columns`    the task hooks (:class:`HFTaskColumns`) and the helpers they use
======================= ========================================================================
"""

from cellbench.store.hf.card import dataset_card
from cellbench.store.hf.export import metadata_from_description, to_hf, write_parquet
from cellbench.store.hf.hub import HubError, hub_files, push_to_hub
from cellbench.store.hf.importer import ColumnMapping, HFImport, plan_import
from cellbench.store.hf.layout import (
    ARRAY_FIELDS,
    DEFAULT_MAX_SHARD_SIZE,
    DESCRIPTION_MARKER,
    HF_LAYOUT_VERSION,
    METADATA_FILE,
    PARQUET_METADATA_KEY,
    README_FILE,
    SPLIT_ALIASES,
)
from cellbench.store.hf.plan import ArrayEncoding, ExportPlan, choose_encoding
from cellbench.store.hf.source import HFSource, HFSplit, detect_source
from cellbench.store.hf.task_columns import HFTaskColumns

__all__ = [
    "ARRAY_FIELDS",
    "DEFAULT_MAX_SHARD_SIZE",
    "DESCRIPTION_MARKER",
    "HF_LAYOUT_VERSION",
    "METADATA_FILE",
    "PARQUET_METADATA_KEY",
    "README_FILE",
    "SPLIT_ALIASES",
    "ArrayEncoding",
    "ColumnMapping",
    "ExportPlan",
    "HFImport",
    "HFSource",
    "HFSplit",
    "HFTaskColumns",
    "HubError",
    "choose_encoding",
    "dataset_card",
    "detect_source",
    "hub_files",
    "metadata_from_description",
    "plan_import",
    "push_to_hub",
    "to_hf",
    "write_parquet",
]
