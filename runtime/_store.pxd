# The versioned parameter store of Leashed-SGD (papers.md §2.1), as C structs and inline nogil functions.
#
# Sibling modules cimport it as ``runtime._store``; runtime/_store.pyx wraps the same functions in the
# Python class ParameterStore (allocation, inspection, single-thread protocol tests).
#
# Layout. A pool of ``n_slots`` parameter vectors (2m+2 for m workers: the proven bound 2m+1 plus one,
# architecture.md "Runtime rules"), each with a one-cache-line header:
#
#   state      = (generation << 2) | kind, kind in FREE, LIVE, STALE, RECLAIMING. The generation grows by one
#                each time the slot leaves the pool, so every incarnation of a slot has its own state values
#                and a late compare-and-swap meant for an earlier incarnation can never succeed.
#   n_readers  = threads that pinned the slot (papers.md: V.n_rdrs). Never reset: a late reader may bump
#                the count of a slot it failed to pin, even after the slot was recycled, and undoes it.
#   version    = version of the vector the slot holds (written by its builder before publishing).
#
# The latest vector is published through ONE atomic 64-bit word, ``published = (version << 16) | slot``.
# Versions grow by one per successful publish and each version is published at most once, so a (slot,
# version) word names exactly one incarnation of one slot: a recycled slot can never satisfy a stale CAS
# on ``published`` (the ABA problem, papers.md §2.1 "ABA"), and a reader's re-check of the word tells
# whether the slot it counted itself into is still the one it meant.
#
# Life of a slot:  FREE(g) --acquire--> LIVE(g+1) --publish fails--> FREE(g+1)
#                                       LIVE(g+1) --published, then replaced--> STALE(g+1)
#                  STALE(g+1) and no readers --reclaim CAS, exactly one thread--> RECLAIMING(g+1) --> FREE(g+1)
# No allocation, no lock, no Python object anywhere: these functions run inside the nogil worker loops.

from libc.math cimport NAN
from libc.stdint cimport int64_t

from leashed.runtime._atomics cimport (lsh_backoff, lsh_cas_acq_rel, lsh_cas_seq_cst, lsh_fetch_add_relaxed,
                               lsh_fetch_add_seq_cst, lsh_load_relaxed, lsh_load_seq_cst,
                               lsh_max_relaxed, lsh_now_ns, lsh_padded_i64, lsh_store_release,
                               lsh_store_seq_cst)


cdef enum:
    STORE_SLOT_BITS = 16
    STORE_SLOT_MASK = 0xFFFF
    STORE_MAX_SLOTS = 0xFFFF
    SLOT_FREE = 0
    SLOT_LIVE = 1
    SLOT_STALE = 2
    SLOT_RECLAIMING = 3


cdef struct lsh_slot_t:
    # exactly one cache line (8 x 8 bytes); the array is allocated 64-byte aligned
    int64_t state
    int64_t n_readers
    int64_t version
    int64_t _pad[5]


cdef struct lsh_store_t:
    lsh_padded_i64 published   # (version << STORE_SLOT_BITS) | slot
    lsh_padded_i64 live        # slots out of the pool (statistic, relaxed)
    lsh_padded_i64 live_max    # largest value `live` reached
    lsh_padded_i64 violations  # checking mode: protocol violations seen (must stay 0)
    lsh_padded_i64 exhausted   # times a full scan of the pool found no free slot (must stay 0)
    lsh_slot_t *slots
    float *data                # n_slots * stride floats, 64-byte aligned
    int64_t n_slots
    int64_t n_params
    int64_t stride             # floats from one slot's vector to the next (n_params rounded up to 16)
    int check                  # checking mode: poison recycled vectors with NaN, verify pinned ones
    int sabotage               # tests only: PIN skips the reader count (breaks the protocol on purpose)


# ---------------------------------------------------------------------------------------- encodings
cdef inline int64_t word_slot(int64_t word) noexcept nogil:
    return word & STORE_SLOT_MASK


cdef inline int64_t word_version(int64_t word) noexcept nogil:
    return word >> STORE_SLOT_BITS


cdef inline int64_t make_word(int64_t slot, int64_t version) noexcept nogil:
    return (version << STORE_SLOT_BITS) | slot


cdef inline int64_t state_kind(int64_t state) noexcept nogil:
    return state & 3


cdef inline int64_t state_gen(int64_t state) noexcept nogil:
    return state >> 2


cdef inline int64_t make_state(int64_t gen, int64_t kind) noexcept nogil:
    return (gen << 2) | kind


cdef inline float *store_theta(lsh_store_t *st, int64_t slot) noexcept nogil:
    return st.data + slot * st.stride


# ---------------------------------------------------------------------------------------- protocol
cdef inline void store_reclaim(lsh_store_t *st, int64_t slot) noexcept nogil:
    """RECLAIM(V) (papers.md §2.1): return a stale vector without readers to the pool, exactly once.

    Called by every thread that might have been the last to let go of a stale vector: the publisher
    right after marking it stale, and every reader right after its decrement. The two sides form a
    store-then-load handshake (publisher: store STALE, load n_readers; reader: decrement n_readers, load
    state), so all four accesses are seq_cst: in their single total order either the publisher's load
    sees the final decrement or the last reader's load sees STALE, hence a stale vector is never
    orphaned. Both may see both; the CAS on the incarnation's own state value lets exactly one claim it.
    """
    cdef lsh_slot_t *h = &st.slots[slot]
    cdef int64_t state = lsh_load_seq_cst(&h.state)
    cdef int64_t expected, i
    cdef float *theta
    if state_kind(state) != SLOT_STALE:
        return
    if lsh_load_seq_cst(&h.n_readers) != 0:
        return
    expected = state
    # acq_rel: acquire orders our poisoning/freeing after the readers' last reads (their decrements are
    # seq_cst RMWs, hence releases, and our seq_cst load of n_readers acquired them); release is not
    # needed here but is free on every architecture that matters.
    if not lsh_cas_acq_rel(&h.state, &expected, make_state(state_gen(state), SLOT_RECLAIMING)):
        return
    lsh_fetch_add_relaxed(&st.live.value, -1)
    if st.check:
        theta = store_theta(st, slot)
        for i in range(st.n_params):
            theta[i] = <float>NAN
    # release: a later acquire (store_acquire's CAS) sees the slot FREE only after everything above,
    # including every reader's reads, which happen-before our claim.
    lsh_store_release(&h.state, make_state(state_gen(state), SLOT_FREE))


cdef inline int64_t store_pin(lsh_store_t *st) noexcept nogil:
    """PIN() (papers.md §2.1): pin the latest published vector; returns its published word.

    Count ourselves into the slot's readers, then re-read the published word: if it still names the
    same (slot, version), the vector was the latest after our increment, so its publisher-to-be-replaced
    will see our count before it can recycle the slot (store-then-load on two variables: seq_cst).
    Otherwise undo, try to reclaim (we may have been the last reader), and retry.
    """
    cdef int64_t word, again, slot
    if st.sabotage:  # tests only: a pin that protects nothing, to show that checking mode notices
        return lsh_load_seq_cst(&st.published.value)
    while True:
        # relaxed: only a hint of which slot to count into; the re-check below is what synchronises
        word = lsh_load_relaxed(&st.published.value)
        slot = word_slot(word)
        lsh_fetch_add_seq_cst(&st.slots[slot].n_readers, 1)
        # seq_cst: ordered after our increment in the single total order (Dekker with store_publish); as a
        # load it is also an acquire, which synchronises with the publishing CAS: we see the vector's data
        again = lsh_load_seq_cst(&st.published.value)
        if again == word:
            return word
        lsh_fetch_add_seq_cst(&st.slots[slot].n_readers, -1)
        store_reclaim(st, slot)


cdef inline void store_unpin(lsh_store_t *st, int64_t slot) noexcept nogil:
    """UNPIN(V) (papers.md §2.1): decrement (seq_cst: a release for our reads of the vector, and one side of
    the reclaim handshake), then reclaim if the vector is stale and we were its last reader."""
    if st.sabotage:
        store_reclaim(st, slot)
        return
    lsh_fetch_add_seq_cst(&st.slots[slot].n_readers, -1)
    store_reclaim(st, slot)


cdef inline int64_t store_acquire(lsh_store_t *st, int64_t hint) noexcept nogil:
    """Take a free slot from the pool for a private copy (papers.md §2.1 step 6 "new vector").

    Scan the slot states from ``hint`` (threads start at different places) and claim a FREE one with a
    CAS to LIVE of the next generation: exactly one thread wins each free slot. acq_rel: the acquire
    pairs with the release that made the slot FREE, so our writes to the vector come after the last
    reads of its previous incarnation. With 2m+2 slots a free one always exists (the worst case is 2m+1
    live vectors plus the coordinator's snapshot pin); a failed full scan is counted in ``exhausted``, and
    after 10 s without a free slot (a bug, never seen) it returns -1 instead of spinning forever.
    """
    cdef int64_t n = st.n_slots, i, slot, state, expected, live, spins = 0, deadline = 0
    cdef bint counted = False
    while True:
        for i in range(n):
            slot = (hint + i) % n
            # relaxed: a hint; the CAS re-validates the exact state value
            state = lsh_load_relaxed(&st.slots[slot].state)
            if state_kind(state) == SLOT_FREE:
                expected = state
                if lsh_cas_acq_rel(&st.slots[slot].state, &expected,
                                   make_state(state_gen(state) + 1, SLOT_LIVE)):
                    live = lsh_fetch_add_relaxed(&st.live.value, 1) + 1
                    lsh_max_relaxed(&st.live_max.value, live)
                    return slot
        if not counted:
            lsh_fetch_add_relaxed(&st.exhausted.value, 1)
            counted = True
            deadline = lsh_now_ns() + 10000000000LL
        elif lsh_now_ns() > deadline:
            return -1
        lsh_backoff(&spins)


cdef inline void store_discard(lsh_store_t *st, int64_t slot) noexcept nogil:
    """Return a private slot that was never published (its CAS failed; papers.md §2.1 step 9 "free N")."""
    cdef int64_t state = lsh_load_relaxed(&st.slots[slot].state)  # our own LIVE(g): nobody else writes it
    lsh_fetch_add_relaxed(&st.live.value, -1)
    # release: pairs with the next owner's acquire CAS
    lsh_store_release(&st.slots[slot].state, make_state(state_gen(state), SLOT_FREE))


cdef inline bint store_publish(lsh_store_t *st, int64_t expected_word, int64_t slot,
                               int64_t version) noexcept nogil:
    """CAS(P, L, N) (papers.md §2.1 step 8): publish private ``slot`` as ``version`` if the published word
    is still ``expected_word`` (the vector L the update was built on). On success mark L stale and try
    to reclaim it; on failure the caller still owns ``slot`` (store_discard it or reuse it).
    """
    cdef int64_t w = expected_word, old, state
    st.slots[slot].version = version
    # seq_cst: as a release it publishes the vector's data and version; in the single total order it
    # follows every reader re-check that still saw L, so our STALE store and n_readers load below come
    # after those readers' increments (the pin handshake).
    if not lsh_cas_seq_cst(&st.published.value, &w, make_word(slot, version)):
        return False
    old = word_slot(expected_word)
    # relaxed: L is LIVE(g) and only the thread that replaced it (us) may change that; our successful CAS
    # read the word L's publisher released, so its LIVE(g) store is visible to us.
    state = lsh_load_relaxed(&st.slots[old].state)
    lsh_store_seq_cst(&st.slots[old].state, make_state(state_gen(state), SLOT_STALE))
    store_reclaim(st, old)
    return True


cdef inline bint store_publish_pinned(lsh_store_t *st, int64_t expected_word, int64_t slot,
                                      int64_t version) noexcept nogil:
    """store_publish, and on success keep the new vector pinned for the caller's next gradient.

    The reader count of the private slot is raised before the CAS (seq_cst), so the vector is pinned from
    the instant it becomes visible: a PIN whose linearisation point is the commit itself. The caller's next
    read->commit window then opens exactly at its commit, with no gap in which other commits go uncounted
    (papers.md §6.1 claim 3 assumes no such gap; §2.1 notes that threads pin the versions they just
    published). Whoever later replaces the vector stores STALE and then loads n_readers after our
    increment, so it cannot recycle the slot under us (the same handshake as store_pin). On failure the
    count is undone and the caller still owns the private slot. Release with store_unpin.
    """
    if st.sabotage:  # tests only: pins count nothing in this mode (see store_pin)
        return store_publish(st, expected_word, slot, version)
    lsh_fetch_add_seq_cst(&st.slots[slot].n_readers, 1)
    if store_publish(st, expected_word, slot, version):
        return True
    lsh_fetch_add_seq_cst(&st.slots[slot].n_readers, -1)
    return False


cdef inline int64_t store_pinned_gen(lsh_store_t *st, int64_t slot) noexcept nogil:
    """Checking mode: the generation of a slot we just pinned (to verify it is not recycled under us)."""
    return state_gen(lsh_load_seq_cst(&st.slots[slot].state))


cdef inline bint store_verify(lsh_store_t *st, int64_t slot, int64_t gen, const float *data,
                              int64_t n) noexcept nogil:
    """Checking mode: a slot we still hold pinned must be the same incarnation, not in the pool, and
    ``data`` (the pinned vector, or a copy built from it) must hold no NaN poison. Counts violations."""
    cdef int64_t state = lsh_load_seq_cst(&st.slots[slot].state)
    cdef int64_t i, kind = state_kind(state)
    cdef bint ok = state_gen(state) == gen and (kind == SLOT_LIVE or kind == SLOT_STALE)
    for i in range(n):
        if data[i] != data[i]:
            ok = False
            break
    if not ok:
        lsh_fetch_add_relaxed(&st.violations.value, 1)
    return ok
