/* tests/fuzz/fuzz_kvcache.c: guard_cache_parse, the checks of the prefix KV cache file reader
 * guard_cache_load (the file-trust rules before it are tested in tests/test_attacks.c), against the
 * committed seed model tests/fuzz/corpus/guardbin/ok-lg3-1b-f16; run from the repository root.
 * Each input is tried as given and with its trailing CRC recomputed.
 * Invariants: a rejected file leaves the loaded prefixes untouched and gives a one-line
 * warning; an accepted one has at most PREFIX_SLOTS entries of 1..max_seq_len in-range ids,
 * and guard_cache_save writes it back byte for byte. */
#include "classify.h"
#include "fuzz.h"

static Guard kv_guard;
static char kv_out[512];

static int kv_init(void) {
    char err[ERRLEN];
    if (guard_open(&kv_guard, "tests/fuzz/corpus/guardbin/ok-lg3-1b-f16", 1, err)) {
        fprintf(stderr, "fuzz_kvcache (run from the repository root): %s\n", err);
        return -1;
    }
    snprintf(kv_out, sizeof kv_out, "%s/saved.kv", fuzz_dir());
    return 0;
}

static int kv_load(const uint8_t *data, size_t size) {
    char err[ERRLEN];
    PrefixStore before = kv_guard.prefixes;
    int rc = guard_cache_parse(&kv_guard, data, size, err);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1, "guard_cache_parse returned %d", rc);
        fuzz_check_err(err);
        FUZZ_CHECK(memcmp(&before, &kv_guard.prefixes, sizeof before) == 0, "a rejected cache changed the prefixes");
        return 0;
    }
    const Config *c = &kv_guard.model.cfg;
    for (int i = 0; i < PREFIX_SLOTS; i++) {
        const PrefixEntry *e = &kv_guard.prefixes.e[i];
        FUZZ_CHECK(e->n >= 0 && e->n <= (int64_t)c->max_seq_len, "entry %d has %lld positions", i, (long long)e->n);
        for (int64_t k = 0; k < e->n; k++) FUZZ_CHECK(e->ids[k] >= 0 && (uint32_t)e->ids[k] < c->vocab_size, "id %d", e->ids[k]);
    }
    FUZZ_CHECK(guard_cache_save(&kv_guard, kv_out, err) == 0, "save: %s", err);
    MappedFile m;
    FUZZ_CHECK(map_file(&m, kv_out, err) == 0, "%s", err);
    FUZZ_CHECK(m.size == size && memcmp(m.data, data, size) == 0, "an accepted cache does not save back to its bytes");
    unmap_file(&m);
    return 1;
}

static int kv_one(const uint8_t *data, size_t size) {
    int ok = kv_load(data, size);
    if (size >= 4) {
        uint8_t *fixed = fuzz_dup(data, size);
        uint32_t c = crc32_update(0, fixed, size - 4);
        for (int k = 0; k < 4; k++) fixed[size - 4 + k] = (uint8_t)(c >> 8 * k);
        if (memcmp(fixed, data, size) != 0) ok |= kv_load(fixed, size);
        free(fixed);
    }
    return ok;
}

FUZZ_TARGET(kv_init, kv_one)
