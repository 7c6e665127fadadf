# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The versioned parameter store of Leashed-SGD (papers.md §2.1): a preallocated pool of parameter vectors
with reader counts and stale flags, the latest published through one atomic (slot, version) word.

The protocol lives in ``_store.pxd`` as inline nogil functions used by the worker loops
(``_loops.pyx``); this module owns the memory (:class:`ParameterStore`) and exposes the same
operations to Python for inspection and for single-threaded protocol tests.
"""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t, intptr_t
from libc.stdlib cimport free
from libc.string cimport memcpy

from leashed.runtime._atomics cimport lsh_aligned_calloc, lsh_load_relaxed, lsh_load_seq_cst
from leashed.runtime._store cimport (SLOT_FREE, SLOT_LIVE, SLOT_RECLAIMING, SLOT_STALE, STORE_MAX_SLOTS,
                             STORE_SLOT_BITS, lsh_slot_t, lsh_store_t, make_state, make_word, state_gen, state_kind,
                             store_acquire, store_discard, store_pin, store_publish, store_theta,
                             store_unpin, word_slot, word_version)

cnp.import_array()

KIND_NAMES = {SLOT_FREE: "free", SLOT_LIVE: "live", SLOT_STALE: "stale", SLOT_RECLAIMING: "reclaiming"}
#: the published word is ``(version << SLOT_BITS) | slot`` (_store.pxd), so a store has at most MAX_SLOTS
SLOT_BITS = STORE_SLOT_BITS
MAX_SLOTS = STORE_MAX_SLOTS


def pool_size(threads):
    """Slots a store for ``threads`` workers needs: 2m+2 (papers.md §2.1: at most 2m+1 live vectors, plus
    one for the coordinating thread's snapshot pin)."""
    return 2 * int(threads) + 2


cdef class ParameterStore:
    """A pool of ``n_slots`` parameter vectors; slot 0 starts published as version 0 holding ``theta0``.

    ``check=True`` is the checking mode: a recycled vector is filled with NaN before it returns to the
    pool, and workers verify that every vector they hold pinned stays the same incarnation and holds no
    NaN (violations are counted in :attr:`violations`). ``_sabotage`` (tests only) makes PIN skip the
    reader count, a deliberately broken protocol that checking mode must catch.
    """

    cdef lsh_store_t *st

    def __cinit__(self, theta0, int64_t n_slots, bint check=False, bint _sabotage=False):
        cdef const float[::1] init = np.ascontiguousarray(theta0, dtype=np.float32).reshape(-1)
        cdef int64_t n = init.shape[0], stride, i
        if n_slots < 2 or n_slots > STORE_MAX_SLOTS:
            raise ValueError(f"a parameter store needs 2..{STORE_MAX_SLOTS} slots, not {n_slots}")
        stride = max((n + 15) // 16 * 16, 16)  # 16 floats = one cache line: slots never share a line
        self.st = <lsh_store_t *>lsh_aligned_calloc(sizeof(lsh_store_t))
        if self.st == NULL:
            raise MemoryError("cannot allocate the parameter store")
        self.st.slots = <lsh_slot_t *>lsh_aligned_calloc(n_slots * sizeof(lsh_slot_t))
        self.st.data = <float *>lsh_aligned_calloc(n_slots * stride * sizeof(float))
        if self.st.slots == NULL or self.st.data == NULL:
            raise MemoryError(f"cannot allocate {n_slots} parameter vectors of {n} floats")
        self.st.n_slots = n_slots
        self.st.n_params = n
        self.st.stride = stride
        self.st.check = 1 if check else 0
        self.st.sabotage = 1 if _sabotage else 0
        for i in range(n_slots):
            self.st.slots[i].state = make_state(0, SLOT_FREE)
        if n:
            memcpy(store_theta(self.st, 0), &init[0], n * sizeof(float))
        self.st.slots[0].state = make_state(1, SLOT_LIVE)
        self.st.slots[0].version = 0
        self.st.live.value = 1
        self.st.live_max.value = 1
        self.st.published.value = make_word(0, 0)

    def __dealloc__(self):
        if self.st != NULL:
            free(self.st.slots)
            free(self.st.data)
            free(self.st)
            self.st = NULL

    # ------------------------------------------------------------------ inspection
    @property
    def address(self):
        """Address of the C ``lsh_store_t`` (valid while this object lives), for the worker loops."""
        return <intptr_t>self.st

    @property
    def n_slots(self):
        return self.st.n_slots

    @property
    def n_params(self):
        return self.st.n_params

    @property
    def check(self):
        return bool(self.st.check)

    @property
    def published(self):
        """(slot, version) of the latest published vector."""
        cdef int64_t w = lsh_load_seq_cst(&self.st.published.value)
        return int(word_slot(w)), int(word_version(w))

    @property
    def version(self):
        return int(word_version(lsh_load_seq_cst(&self.st.published.value)))

    @property
    def live(self):
        """Vectors out of the pool now: published and not yet reclaimed, plus private copies."""
        return int(lsh_load_relaxed(&self.st.live.value))

    @property
    def live_max(self):
        return int(lsh_load_relaxed(&self.st.live_max.value))

    @property
    def violations(self):
        return int(lsh_load_relaxed(&self.st.violations.value))

    @property
    def exhausted(self):
        return int(lsh_load_relaxed(&self.st.exhausted.value))

    def slot_states(self):
        """[(kind name, generation, n_readers, version)] per slot (racy while workers run)."""
        out = []
        cdef int64_t i, state
        for i in range(self.st.n_slots):
            state = lsh_load_seq_cst(&self.st.slots[i].state)
            out.append((KIND_NAMES[state_kind(state)], int(state_gen(state)),
                        int(lsh_load_seq_cst(&self.st.slots[i].n_readers)), int(self.st.slots[i].version)))
        return out

    def check_quiescent(self):
        """Problems with the pool once no thread runs: [] when the published slot is the only vector out
        of the pool, no slot has readers, and the live count is 1."""
        problems = []
        slot, version = self.published
        for i, (kind, gen, readers, v) in enumerate(self.slot_states()):
            if readers != 0:
                problems.append(f"slot {i} has {readers} readers")
            if i == slot and kind != "live":
                problems.append(f"published slot {i} is {kind}")
            if i != slot and kind != "free":
                problems.append(f"slot {i} is {kind}, not back in the pool")
        if self.live != 1:
            problems.append(f"live count is {self.live}, not 1")
        if self.violations:
            problems.append(f"{self.violations} pin violations")
        if self.exhausted:
            problems.append(f"pool exhausted {self.exhausted} times")
        return problems

    def latest(self):
        """(version, copy of the latest published vector): pin, copy, unpin, without the GIL."""
        out = np.empty(self.st.n_params, dtype=np.float32)
        return self.copy_latest_into(out), out

    def copy_latest_into(self, float[::1] out not None):
        """Copy the latest published vector into ``out``; returns its version."""
        if out.shape[0] != self.st.n_params:
            raise ValueError(f"out has {out.shape[0]} floats, the store holds {self.st.n_params}")
        cdef int64_t w
        with nogil:
            w = store_pin(self.st)
            if self.st.n_params:
                memcpy(&out[0], store_theta(self.st, word_slot(w)), self.st.n_params * sizeof(float))
            store_unpin(self.st, word_slot(w))
        return int(word_version(w))

    # ------------------------------------------------------------------ protocol steps (tests)
    def pin(self):
        """PIN(): the published word (slot, version) now pinned; pair with :meth:`unpin`."""
        cdef int64_t w = store_pin(self.st)
        return int(word_slot(w)), int(word_version(w))

    def unpin(self, int64_t slot):
        self._check_slot(slot)
        store_unpin(self.st, slot)

    def acquire(self, int64_t hint=0):
        """Take a free slot (LIVE, private) from the pool; raises if none is free (single-thread use)."""
        cdef int64_t i, free_slots = 0
        for i in range(self.st.n_slots):
            if state_kind(lsh_load_relaxed(&self.st.slots[i].state)) == SLOT_FREE:
                free_slots += 1
        if free_slots == 0:
            raise RuntimeError("the pool has no free slot")
        return int(store_acquire(self.st, hint))

    def discard(self, int64_t slot):
        self._check_slot(slot)
        store_discard(self.st, slot)

    def publish(self, tuple expected, int64_t slot, int64_t version):
        """CAS the published word from ``expected`` = (slot, version) to (``slot``, ``version``)."""
        self._check_slot(slot)
        return bool(store_publish(self.st, make_word(expected[0], expected[1]), slot, version))

    def theta(self, int64_t slot):
        """A writable numpy view of a slot's vector that keeps the store alive (tests, inspection: racy
        while workers run)."""
        self._check_slot(slot)
        cdef cnp.npy_intp dims[1]
        dims[0] = self.st.n_params
        arr = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_FLOAT32, <void *>store_theta(self.st, slot))
        cnp.set_array_base(arr, self)
        return arr

    def _check_slot(self, int64_t slot):
        if not 0 <= slot < self.st.n_slots:
            raise IndexError(f"slot {slot} out of range 0..{self.st.n_slots - 1}")
