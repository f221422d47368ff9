/* Distinct-count sketches of the `uniques` metric kind (docs/storage.md §3): identity hashing
 * and the per-group union of sketch rows. gumshoe/sketch.py is the Python face and keeps a
 * numpy path for every function here (the tests compare the two).
 *
 * Hash: XXH64 (xxHash, 64-bit, seed 0) of the identity's UTF-8 bytes; an integer is hashed as
 * its decimal text. Little-endian reads (byte-swapped on big-endian machines), so a hash is
 * the same in every process, on every machine.
 *
 * Sketch row: sorted unique hashes while at most `sparse_max` (sparse), else 2^14 one-byte
 * HyperLogLog registers (dense): index = top 14 bits, rank = leading zeros of the other 50
 * bits + 1 (51 when they are all zero).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_buffer.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#define P_BITS 14
#define N_REG (1 << P_BITS)
#define Q_BITS (64 - P_BITS)

/* -- XXH64 ---------------------------------------------------------------------------------- */
#define PR1 0x9E3779B185EBCA87ULL
#define PR2 0xC2B2AE3D27D4EB4FULL
#define PR3 0x165667B19E3779F9ULL
#define PR4 0x85EBCA77C2B2AE63ULL
#define PR5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t xround(uint64_t acc, uint64_t input) {
    acc += input * PR2;
    acc = rotl64(acc, 31);
    return acc * PR1;
}

static inline uint64_t xmerge(uint64_t acc, uint64_t val) {
    acc ^= xround(0, val);
    return acc * PR1 + PR4;
}

static uint64_t xxh64(const uint8_t *p, size_t len) {
    const uint8_t *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = PR1 + PR2, v2 = PR2, v3 = 0, v4 = (uint64_t)0 - PR1;
        const uint8_t *limit = end - 32;
        do {
            v1 = xround(v1, rd64(p));
            v2 = xround(v2, rd64(p + 8));
            v3 = xround(v3, rd64(p + 16));
            v4 = xround(v4, rd64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xmerge(h, v1);
        h = xmerge(h, v2);
        h = xmerge(h, v3);
        h = xmerge(h, v4);
    } else {
        h = PR5;
    }
    h += (uint64_t)len;
    while (p + 8 <= end) {
        h ^= xround(0, rd64(p));
        h = rotl64(h, 27) * PR1 + PR4;
        p += 8;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)rd32(p) * PR1;
        h = rotl64(h, 23) * PR2 + PR3;
        p += 4;
    }
    while (p < end) {
        h ^= (*p) * PR5;
        h = rotl64(h, 11) * PR1;
        p++;
    }
    h ^= h >> 33;
    h *= PR2;
    h ^= h >> 29;
    h *= PR3;
    h ^= h >> 32;
    return h;
}

/* The decimal text of v into buf (at least 20 bytes); its length. */
static inline size_t int_text(int64_t v, char *buf) {
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) tmp[n++] = '-';
    for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    return n;
}

static int get_buf(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize,
                   const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (itemsize && view->itemsize != itemsize) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: expected %zd-byte items", what, itemsize);
        return -1;
    }
    return 0;
}

/* hash_objects(seq, out_hash, out_present): per item, XXH64 of a str's UTF-8 bytes or of an
 * int's decimal text; None -> present 0 (hash 0). Anything else raises TypeError naming the
 * position. */
static PyObject *hash_objects(PyObject *self, PyObject *args) {
    PyObject *seq_obj, *out_obj, *present_obj;
    if (!PyArg_ParseTuple(args, "OOO:hash_objects", &seq_obj, &out_obj, &present_obj))
        return NULL;
    PyObject *seq = PySequence_Fast(seq_obj, "hash_objects: expected a sequence");
    if (!seq) return NULL;
    Py_buffer out, present;
    if (get_buf(out_obj, &out, 1, 8, "out_hash") < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    if (get_buf(present_obj, &present, 1, 1, "out_present") < 0) {
        PyBuffer_Release(&out);
        Py_DECREF(seq);
        return NULL;
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL;
    if (out.len / 8 != n || present.len != n) {
        PyErr_SetString(PyExc_ValueError, "hash_objects: output lengths differ from the input");
        goto done;
    }
    uint64_t *o = out.buf;
    uint8_t *pr = present.buf;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    char text[24];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = items[i];
        if (v == Py_None) {
            o[i] = 0;
            pr[i] = 0;
        } else if (PyUnicode_Check(v)) {
            Py_ssize_t len;
            const char *s = PyUnicode_AsUTF8AndSize(v, &len);
            if (!s) goto done;
            o[i] = xxh64((const uint8_t *)s, (size_t)len);
            pr[i] = 1;
        } else if (PyLong_Check(v) && !PyBool_Check(v)) {
            int overflow = 0;
            long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow) { /* beyond 64 bits: Python's own decimal text */
                PyObject *str = PyObject_Str(v);
                if (!str) goto done;
                Py_ssize_t len;
                const char *s = PyUnicode_AsUTF8AndSize(str, &len);
                if (!s) {
                    Py_DECREF(str);
                    goto done;
                }
                o[i] = xxh64((const uint8_t *)s, (size_t)len);
                Py_DECREF(str);
            } else {
                if (x == -1 && PyErr_Occurred()) goto done;
                o[i] = xxh64((const uint8_t *)text, int_text((int64_t)x, text));
            }
            pr[i] = 1;
        } else {
            PyErr_Format(PyExc_TypeError,
                         "item %zd: an identity must be a string or an integer, not %.100s", i,
                         Py_TYPE(v)->tp_name);
            goto done;
        }
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&present);
    Py_DECREF(seq);
    return result;
}

/* hash_int64(values, out): XXH64 of each int64's decimal text. */
static PyObject *hash_int64(PyObject *self, PyObject *args) {
    PyObject *v_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO:hash_int64", &v_obj, &out_obj)) return NULL;
    Py_buffer v, out;
    if (get_buf(v_obj, &v, 0, 8, "values") < 0) return NULL;
    if (get_buf(out_obj, &out, 1, 8, "out") < 0) {
        PyBuffer_Release(&v);
        return NULL;
    }
    PyObject *result = NULL;
    if (v.len != out.len) {
        PyErr_SetString(PyExc_ValueError, "hash_int64: len(out) != len(values)");
    } else {
        const int64_t *x = v.buf;
        uint64_t *o = out.buf;
        const Py_ssize_t n = v.len / 8;
        Py_BEGIN_ALLOW_THREADS
        char text[24];
        for (Py_ssize_t i = 0; i < n; i++)
            o[i] = xxh64((const uint8_t *)text, int_text(x[i], text));
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&v);
    PyBuffer_Release(&out);
    return result;
}

/* hash_fixed(data, width, out): XXH64 of each fixed-width item of a numpy 'S' (width bytes,
 * trailing NULs stripped) array -- a 'U' array is encoded to UTF-8 by the caller. */
static PyObject *hash_fixed(PyObject *self, PyObject *args) {
    PyObject *d_obj, *out_obj;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "OnO:hash_fixed", &d_obj, &width, &out_obj)) return NULL;
    Py_buffer d, out;
    if (get_buf(d_obj, &d, 0, 0, "data") < 0) return NULL;
    if (get_buf(out_obj, &out, 1, 8, "out") < 0) {
        PyBuffer_Release(&d);
        return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t n = out.len / 8;
    if (width <= 0 || d.len != n * width) {
        PyErr_SetString(PyExc_ValueError, "hash_fixed: len(data) != width * len(out)");
    } else {
        const uint8_t *s = d.buf;
        uint64_t *o = out.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            const uint8_t *item = s + i * width;
            size_t len = (size_t)width;
            while (len && item[len - 1] == 0) len--;
            o[i] = xxh64(item, len);
        }
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&d);
    PyBuffer_Release(&out);
    return result;
}

/* -- union ---------------------------------------------------------------------------------- */
/* A hash's register rank: leading zeros of its low Q_BITS bits, plus one (Q_BITS + 1 when they
 * are all zero). Bit P_BITS - 1 of h << P_BITS is always 0, so setting it changes no nonzero
 * case and makes the all-zero one come out as Q_BITS + 1 without a branch. */
static inline uint8_t rank_of(uint64_t h) {
    return (uint8_t)(__builtin_clzll((h << P_BITS) | ((uint64_t)1 << (P_BITS - 1))) + 1);
}

/* h into registers: no branch on the register, a store every time (a branch to store only a
 * higher rank mispredicted where many groups' registers are still filling) */
static inline void reg_max(uint8_t *reg, uint64_t h) {
    const uint32_t idx = (uint32_t)(h >> Q_BITS);
    const uint8_t rank = rank_of(h);
    const uint8_t old = reg[idx];
    reg[idx] = old > rank ? old : rank;
}

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline void isort(uint64_t *a, Py_ssize_t n) {
    for (Py_ssize_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        Py_ssize_t j = i;
        while (j > 0 && a[j - 1] > v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

/* Quicksort with insertion sort below 24 items: the sets to sort are small (<= sparse_max). */
static void qsort64(uint64_t *a, Py_ssize_t n) {
    while (n > 24) {
        uint64_t x = a[0], y = a[n / 2], z = a[n - 1];
        uint64_t piv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        Py_ssize_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < piv) i++;
            while (a[j] > piv) j--;
            if (i >= j) break;
            uint64_t t = a[i];
            a[i] = a[j];
            a[j] = t;
            i++;
            j--;
        }
        /* [0, j] <= piv <= [j+1, n) */
        if (j + 1 < n - j - 1) {
            qsort64(a, j + 1);
            a += j + 1;
            n -= j + 1;
        } else {
            qsort64(a + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    isort(a, n);
}

/* Sorts m uniformly distributed hashes (m <= 4,096): a counting pass on their top bits puts
 * each in its bucket (about one per bucket), then insertion sort finishes in about m steps.
 * tmp holds m items, cnt 4,097 counters. Larger sets take the quicksort. */
#define BUCKET_BITS_MAX 12
static void sort_hashes(uint64_t *a, Py_ssize_t m, uint64_t *tmp, uint32_t *cnt) {
    if (m <= 32) {
        isort(a, m);
        return;
    }
    int b = 1;
    while (((Py_ssize_t)1 << b) < m) b++;
    if (b > BUCKET_BITS_MAX) {
        qsort64(a, m);
        return;
    }
    const int shift = 64 - b;
    const uint32_t nb = (uint32_t)1 << b;
    memset(cnt, 0, (nb + 1) * sizeof(uint32_t));
    for (Py_ssize_t i = 0; i < m; i++) cnt[(a[i] >> shift) + 1]++;
    for (uint32_t i = 0; i < nb; i++) cnt[i + 1] += cnt[i];
    for (Py_ssize_t i = 0; i < m; i++) tmp[cnt[a[i] >> shift]++] = a[i];
    isort(tmp, m);
    memcpy(a, tmp, (size_t)m * sizeof(uint64_t));
}

/* Two ascending runs merged into out, each value once, up to cap values; returns how many were
 * written (cap: the merge stopped there). */
static Py_ssize_t merge_unique(const uint64_t *restrict x, int64_t nx, const uint64_t *restrict y,
                               int64_t ny, uint64_t *restrict out, Py_ssize_t cap) {
    int64_t i = 0, j = 0;
    Py_ssize_t m = 0;
    while (m < cap && i < nx && j < ny) {
        const uint64_t a = x[i], b = y[j];
        out[m++] = a < b ? a : b;
        i += a <= b;
        j += b <= a;
    }
    while (m < cap && i < nx) out[m++] = x[i++];
    while (m < cap && j < ny) out[m++] = y[j++];
    return m;
}

/* Large buffers of the last calls, kept for the next: a union's partition, and the memory
 * of its outputs (Pooled, below), which Python holds until the partial that reads them is
 * dropped. A fresh buffer costs a page fault per 4 KiB written (~3 us on this VM: as much as
 * the partition itself, and 1,900 faults, ~6 ms, of a by-name query's outputs), a kept one
 * none. Taken best-fit (the smallest that holds n) and given back under a lock (a few calls per
 * union); at most SCRATCH_KEEP bytes in SCRATCH_SLOTS buffers kept, the smallest evicted. */
typedef struct {
    size_t n; /* uint64 items */
    uint64_t data[];
} Scratch;
#define SCRATCH_SLOTS 32
#define SCRATCH_KEEP ((size_t)256 << 20)
static Scratch *cached_scratch[SCRATCH_SLOTS];
static size_t cached_bytes = 0;
static pthread_mutex_t scratch_lock = PTHREAD_MUTEX_INITIALIZER;

/* A child forked while another thread held the lock (gumtool import forks its workers) would
 * find it held forever: the child starts with it free (the cache's buffers are its copies). */
static void scratch_after_fork(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    scratch_lock = fresh;
}

/* A buffer of n items at least and at most max_n (not one far larger: a small output would
 * hold it as long as Python holds the output): the smallest kept one, else a new one. ROOMY:
 * the max_n of a buffer about to be filled (a partition, an output before pooled_fit). */
#define ROOMY(n) (4 * (size_t)(n) + 512)
static Scratch *scratch_take(size_t n, size_t max_n) {
    Scratch *s = NULL;
    pthread_mutex_lock(&scratch_lock);
    int best = -1;
    for (int i = 0; i < SCRATCH_SLOTS; i++) {
        const Scratch *c = cached_scratch[i];
        if (c && c->n >= n && c->n <= max_n && (best < 0 || c->n < cached_scratch[best]->n))
            best = i;
    }
    if (best >= 0) {
        s = cached_scratch[best];
        cached_scratch[best] = NULL;
        cached_bytes -= s->n * sizeof(uint64_t);
    }
    pthread_mutex_unlock(&scratch_lock);
    if (!s && (s = malloc(sizeof(Scratch) + (n ? n : 1) * sizeof(uint64_t)))) s->n = n;
    return s;
}

static void scratch_give(Scratch *s) {
    if (!s) return;
    const size_t bytes = s->n * sizeof(uint64_t);
    Scratch *drop = s;
    pthread_mutex_lock(&scratch_lock);
    int at = -1; /* an empty slot, else the smallest buffer if it is smaller than this one */
    for (int i = 0; i < SCRATCH_SLOTS && at < 0; i++)
        if (!cached_scratch[i]) at = i;
    if (at < 0) {
        int small = 0;
        for (int i = 1; i < SCRATCH_SLOTS; i++)
            if (cached_scratch[i]->n < cached_scratch[small]->n) small = i;
        if (cached_scratch[small]->n < s->n) at = small;
    }
    if (at >= 0) {
        Scratch *old = cached_scratch[at];
        const size_t total = cached_bytes - (old ? old->n * sizeof(uint64_t) : 0) + bytes;
        if (total <= SCRATCH_KEEP) {
            cached_scratch[at] = s;
            cached_bytes = total;
            drop = old;
        }
    }
    pthread_mutex_unlock(&scratch_lock);
    free(drop);
}

/* A union's output array (hashes, registers) in a kept buffer: read-only bytes through the
 * buffer protocol (numpy.frombuffer), its first len bytes; back to the cache when the last
 * reference goes. */
typedef struct {
    PyObject_HEAD
    Scratch *mem;
    Py_ssize_t len;
} Pooled;

static int pooled_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    Pooled *p = (Pooled *)self;
    return PyBuffer_FillInfo(view, self, p->mem->data, p->len, 1, flags);
}

static void pooled_dealloc(PyObject *self) {
    scratch_give(((Pooled *)self)->mem);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs pooled_as_buffer = {pooled_getbuffer, NULL};

static PyObject *pooled_held(PyObject *self, void *closure) {
    return PyLong_FromSize_t(((Pooled *)self)->mem->n * sizeof(uint64_t));
}

static PyGetSetDef pooled_getset[] = {
    {"held", pooled_held, NULL, "bytes of the buffer this output keeps (its bytes and room)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PooledType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gumshoe._sketch.Pooled",
    .tp_basicsize = sizeof(Pooled),
    .tp_dealloc = pooled_dealloc,
    .tp_as_buffer = &pooled_as_buffer,
    .tp_getset = pooled_getset,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A union's output bytes in a kept buffer (read-only, buffer protocol).",
};

/* A Pooled of room for n bytes (len 0 until set), or NULL with MemoryError (GIL held). */
static Pooled *pooled_new(size_t n) {
    Pooled *p = PyObject_New(Pooled, &PooledType);
    if (!p) return NULL;
    p->len = 0;
    const size_t items = (n + 7) / 8;
    if (!(p->mem = scratch_take(items, ROOMY(items)))) {
        PyObject_Free(p);
        PyErr_NoMemory();
        return NULL;
    }
    return p;
}

/* A Pooled's bytes moved to a buffer near their size when they fill less than half of it
 * (the bound of a union's output can be a few times what it writes, and a memtable's
 * roll-up keeps its output until the flush): a kept buffer of that size if there is one (no
 * page faults: the previous query's outputs), else a new one; the large one goes back. */
static void pooled_fit(Pooled *p) {
    const size_t items = ((size_t)p->len + 7) / 8;
    if (p->mem->n <= 2 * items + 512) return;
    Scratch *fit = scratch_take(items, items + items / 2 + 512);
    if (!fit) return; /* out of memory: keep the larger one */
    memcpy(fit->data, p->mem->data, (size_t)p->len);
    scratch_give(p->mem);
    p->mem = fit;
}

#define SLACK 2
#define BITMAP_BITS 17

/* union(blocks, n_groups, sparse_max[, threads, job, counts])
 *   -> (lens, hashes, dense_groups, registers, sums, histograms) as bytes (int64, uint64,
 *      int64, uint8, int64, int64): sums None unless some block has weights; histograms None
 *      unless counts: per dense group, how many of its registers hold each value 0..51 (52
 *      each; the estimator's input, made in pass 3 on the threads while the registers are in
 *      cache).
 *
 * threads: how many threads (lanes) take the passes' units (at most one per block; the result
 * is the same for any number); job: a Job whose helpers take units beside this thread (none:
 * this thread runs them all). See "the union's units and lanes" below.
 *
 * The rows of several sketch columns (the blocks of a scan, read in place: no concatenation)
 * united per group. blocks: a sequence of (lens, hashes, dense_rows, registers, keys[,
 * weights]): lens unsigned, 1/2/4/8 bytes, one per row; hashes uint64, sum(lens) of them, row
 * after row; dense_rows int64, the rows holding registers (k x 2^14 uint8) instead of hashes;
 * keys the row's group in [0, n_groups), -1 for a row left out, as an int64 array, one int for
 * every row, or (base, key parts[, mask]) computed here (make_keys); weights, integers one per
 * row (a block's roll-up counts), summed per group into `sums` when some block has them: a
 * query of uniques alone gets its row counts from the union's first pass, which makes the
 * keys anyway, instead of from a pass of the sum kernel of its own.
 *
 * A group's upper bound on distinct hashes (its rows' lens) decides its path. At most
 * STREAM_FACTOR * sparse_max, or beyond the max_streamed largest groups ("light"): its hashes
 * are partitioned by group (a counting sort), then each group's merged (one or two sorted
 * runs: partials), sorted where they lie and deduplicated (up to 4,096), or deduplicated in
 * one reused open-addressing table sized to it and sorted; past sparse_max distinct (or
 * surely so, by a bitmap), folded into registers. Above ("streamed", or with a dense input
 * row): its hashes go, as the blocks are read, straight into its registers -- no copy of the
 * (mostly) streamed hashes, one sequential read with software prefetch (this machine's
 * hardware prefetcher alone left the loop waiting on memory: 73 ms for 23M hashes against 30
 * ms). One with at most sparse_max registers set may hold at most sparse_max distinct hashes:
 * its rows are read again into a set of its own (at most sparse_max + 1 hashes). */
#define MAX_KEY_PARTS 16
typedef struct { /* key += (codes[i] - offset) * stride, or += 0 where nil[i] */
    Py_buffer codes, nil;
    int type, has_nil;
    int64_t offset, stride;
} KeyPart;

typedef struct {
    Py_buffer lb, hb, dr, rg, kb, wb;
    const void *lens;
    const uint64_t *hashes;
    const int64_t *drows, *keys;
    const uint8_t *regs;
    int64_t key; /* every row's group when keys is NULL (with parts: the base of the key) */
    int lw;
    Py_ssize_t n, nh, k;
    KeyPart part[MAX_KEY_PARTS]; /* the keys from grouping codes, made per pass (make_keys) */
    int n_parts, computed, fit32, wtype; /* wtype: the weights' type, T_BAD for none */
    Py_buffer mb; /* with computed keys: the selected rows (bool), or none (every row) */
} Src;

/* The block's keys from its parts into buf (then s->keys): the engine's mixed-radix group key
 * computed here, from the stored (narrow) codes, instead of an int64 array per block. */
#define ADD_PART(CTYPE, WIDE, UTYPE)                                                       \
    do {                                                                                   \
        const CTYPE *restrict c = (const CTYPE *)kp->codes.buf;                            \
        if (kp->has_nil) {                                                                 \
            const uint8_t *restrict nil = kp->nil.buf;                                     \
            for (Py_ssize_t i = 0; i < n; i++)                                             \
                out[i] += ((int64_t)(WIDE)c[i] - off) * st * (int64_t)(nil[i] == 0);       \
        } else {                                                                           \
            for (Py_ssize_t i = 0; i < n; i++) out[i] += ((int64_t)(WIDE)c[i] - off) * st; \
        }                                                                                  \
    } while (0)
/* Whether every part's term (codes - offset) * stride, and the base, stay far inside int32 for
 * any code of its type (8/16-bit codes): then make_keys32 sums them in 32-bit lanes. */
static int keys_fit32(const Src *s) {
    int64_t bound = s->key < 0 ? -s->key : s->key;
    for (int q = 0; q < s->n_parts; q++) {
        const KeyPart *kp = &s->part[q];
        const int64_t span = kp->type == T_U8 || kp->type == T_I8 || kp->type == T_BOOL ? 256
                             : kp->type == T_U16 || kp->type == T_I16 ? 65536 : -1;
        const int64_t off = kp->offset < 0 ? -kp->offset : kp->offset;
        const int64_t st = kp->stride < 0 ? -kp->stride : kp->stride;
        if (span < 0 || off > ((int64_t)1 << 30) || st > ((int64_t)1 << 30)) return 0;
        bound += (span + off) * st;
        if (bound >= ((int64_t)1 << 30)) return 0;
    }
    return 1;
}

#define KEY_TILE 512
#define ADD_PART32(CTYPE)                                                                  \
    do {                                                                                   \
        const CTYPE *restrict c = (const CTYPE *)kp->codes.buf + i0;                       \
        if (kp->has_nil) {                                                                 \
            const uint8_t *restrict nil = (const uint8_t *)kp->nil.buf + i0;               \
            for (Py_ssize_t j = 0; j < t; j++)                                             \
                acc[j] += (((int32_t)c[j] - off) * st) & -(int32_t)(nil[j] == 0);          \
        } else {                                                                           \
            for (Py_ssize_t j = 0; j < t; j++) acc[j] += ((int32_t)c[j] - off) * st;       \
        }                                                                                  \
    } while (0)
/* make_keys in 32-bit lanes, a tile at a time (keys_fit32), in a clone for AVX2 (8 lanes of
 * vpmulld; int64 products have no AVX2 multiply): the keys of a country x device union's two
 * passes 23.4 -> 8.2 Mcycles, ~9% of it */
CLONES static void make_keys32(Src *s, int64_t *restrict out) {
    int32_t acc[KEY_TILE];
    const Py_ssize_t n = s->n;
    const uint8_t *restrict m = s->mb.obj ? s->mb.buf : NULL;
    for (Py_ssize_t i0 = 0; i0 < n; i0 += KEY_TILE) {
        const Py_ssize_t t = n - i0 < KEY_TILE ? n - i0 : KEY_TILE;
        for (Py_ssize_t j = 0; j < t; j++) acc[j] = (int32_t)s->key;
        for (int q = 0; q < s->n_parts; q++) {
            const KeyPart *kp = &s->part[q];
            const int32_t off = (int32_t)kp->offset, st = (int32_t)kp->stride;
            switch (kp->type) {
            case T_I8: ADD_PART32(int8_t); break;
            case T_U8: case T_BOOL: ADD_PART32(uint8_t); break;
            case T_I16: ADD_PART32(int16_t); break;
            case T_U16: default: ADD_PART32(uint16_t); break; /* keys_fit32: no other */
            }
        }
        int64_t *restrict o = out + i0;
        if (m) {
            for (Py_ssize_t j = 0; j < t; j++) o[j] = m[i0 + j] ? acc[j] : -1;
        } else {
            for (Py_ssize_t j = 0; j < t; j++) o[j] = acc[j];
        }
    }
    s->keys = out;
}

static void make_keys(Src *s, int64_t *restrict out) {
    if (s->fit32) {
        make_keys32(s, out);
        return;
    }
    const Py_ssize_t n = s->n;
    for (Py_ssize_t i = 0; i < n; i++) out[i] = s->key;
    for (int q = 0; q < s->n_parts; q++) {
        const KeyPart *kp = &s->part[q];
        const int64_t off = kp->offset, st = kp->stride;
        switch (kp->type) { INT_TYPE_CASES(ADD_PART) }
    }
    if (s->mb.obj) {
        const uint8_t *restrict m = s->mb.buf;
        for (Py_ssize_t i = 0; i < n; i++) out[i] = m[i] ? out[i] : -1;
    }
    s->keys = out;
}

static int parts_fit(const Src *s) { /* every part's codes (and nil, mask) one per row */
    if (s->mb.obj && s->mb.len != s->n) return 0;
    for (int q = 0; q < s->n_parts; q++) {
        const KeyPart *kp = &s->part[q];
        if (kp->codes.len != s->n * kp->codes.itemsize || (kp->has_nil && kp->nil.len != s->n))
            return 0;
    }
    return 1;
}

static inline int64_t key_at(const Src *s, Py_ssize_t i) { return s->keys ? s->keys[i] : s->key; }

/* r = max(r, o) register by register (restrict: vectorised, 16 KiB in ~0.3 us) */
static void reg_max_into(uint8_t *restrict r, const uint8_t *restrict o) {
    for (int j = 0; j < N_REG; j++) r[j] = r[j] > o[j] ? r[j] : o[j];
}

/* How many of a group's registers are set: at most its distinct hashes (each sets one). */
static Py_ssize_t registers_set(const uint8_t *restrict r) {
    Py_ssize_t n = 0;
    for (int j = 0; j < N_REG; j++) n += r[j] != 0;
    return n;
}

/* out[v] = how many of a group's registers hold v (0..Q_BITS + 1); returns 1 when one holds
 * more (not a register of this kind), else 0. Eight counters per value, one per register
 * position mod 8, filled from one 8-byte load: neighbouring registers often hold the same
 * value, and one counter's increments would wait on each other (four, a byte load each: a
 * country x device query's 293 groups 4.7 -> 3.9 Mcycles). */
static int reg_histogram(const uint8_t *restrict r, int64_t *restrict out) {
    uint32_t c[8][256] = {{0}};
    for (int j = 0; j < N_REG; j += 8) {
        uint64_t x;
        memcpy(&x, r + j, 8);
        for (int b = 0; b < 8; b++) c[b][(x >> (8 * b)) & 0xFF]++;
    }
    int bad = 0;
    for (int v = 0; v < 256; v++) {
        int64_t n = 0;
        for (int b = 0; b < 8; b++) n += c[b][v];
        if (v < Q_BITS + 2) out[v] = n;
        else if (n) bad = 1;
    }
    return bad;
}

#define PREFETCH_AHEAD 128 /* hashes (1 KiB) */
/* A group whose rows hold more than STREAM_FACTOR * sparse_max hashes streams into its
 * registers; below, it is partitioned, and deduplicated group by group, in cache. Most groups
 * with a few thousand hashes (x 2-4 repeats) stay sparse, which a streamed group finds out only
 * by reading its rows again; groups with more end up registers. */
#define STREAM_FACTOR 4
/* At most this many groups stream: as many as the core's L2 holds registers of (16 KiB each),
 * 32 to 256; any more are partitioned as light groups are (1,000 random groups of 16k hashes
 * each streamed into 16 MiB of registers: a cache miss per hash, 308 ms against 240
 * partitioned). With 1 MiB of L2 (this machine's cores), 64 rather than 128: the union of a
 * by-name scan (1,000 groups, 11.5M hashes) 61 -> 56 ms alone, and the two threads' unions
 * at once 71-76 -> 64 ms (country x device 102-106 -> 93-96). Unknown L2: 64. */
static Py_ssize_t max_streamed = 64; /* set when the module loads (set_max_streamed) */
static void set_max_streamed(void) {
    long l2 = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    const long k = l2 > 0 ? l2 / N_REG : 64;
    max_streamed = k < 32 ? 32 : k > 256 ? 256 : k;
}

static int cmp_desc(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Pass 1 over a block: each selected row's hashes added to its group's count, and its
 * weight, where the block has weights, to the group's sum (sums[g]). Returns 1 on a key out of
 * range, 3 when lens and hashes disagree. */
#define COUNT_ROWS(ALSO) /* over ln, keys: run, bad, count[g]; ALSO per row of a group g */  \
    for (Py_ssize_t i = 0; i < s->n; i++) {                                                 \
        __builtin_prefetch(keys + i + 64);                                                  \
        const int64_t g = keys[i], len = ln[i];                                             \
        run += len;                                                                         \
        if ((uint64_t)g >= (uint64_t)n_groups) {                                            \
            bad |= g != -1 || (s->computed && !s->mb.obj);                                  \
            continue;                                                                       \
        }                                                                                   \
        count[g] += len;                                                                    \
        ALSO;                                                                               \
    }
/* with weights (a query of uniques alone: its roll-up counts), a row's weight added to its
 * group's sum in the same pass over its key (a second pass over the keys was ~8 Mcycles of a
 * country x device union's pass 1: 20.9 -> 16.7) */
#define COUNT_WEIGH(CTYPE, WIDE, UTYPE)                                                    \
    do {                                                                                   \
        const CTYPE *restrict w = (const CTYPE *)s->wb.buf;                                \
        COUNT_ROWS(sums[g] += (int64_t)(WIDE)w[i])                                         \
    } while (0)
#define DEFINE_COUNT(LT, NAME)                                                               \
    CLONES_V3                                                                               \
    static int NAME(const Src *s, int64_t *restrict count, int64_t *restrict sums,          \
                    Py_ssize_t n_groups) {                                                  \
        const LT *restrict ln = s->lens;                                                    \
        const int64_t *restrict keys = s->keys;                                             \
        int64_t run = 0;                                                                    \
        int bad = 0;                                                                        \
        switch (s->wtype) {                                                                 \
        INT_TYPE_CASES(COUNT_WEIGH)                                                         \
        default: COUNT_ROWS((void)0)                                                        \
        }                                                                                   \
        return bad ? 1 : run != s->nh ? 3 : 0;                                              \
    }
DEFINE_COUNT(uint8_t, count_u8)
DEFINE_COUNT(uint16_t, count_u16)
DEFINE_COUNT(uint32_t, count_u32)
DEFINE_COUNT(uint64_t, count_u64)

/* sum(lens): a plain loop per width, which the compiler vectorises (read a byte at a time
 * through a switch, the check cost a fifth of a total's union: 14.6 -> 12.0 ms) */
#define SUM_LENS(LT)                                                                       \
    do {                                                                                   \
        const LT *restrict l = p;                                                          \
        for (Py_ssize_t i = 0; i < n; i++) run += l[i];                                    \
    } while (0)
CLONES static int64_t lens_sum(const void *p, int w, Py_ssize_t n) {
    uint64_t run = 0;
    switch (w) {
    case 1: SUM_LENS(uint8_t); break;
    case 2: SUM_LENS(uint16_t); break;
    case 4: SUM_LENS(uint32_t); break;
    default: SUM_LENS(uint64_t); break;
    }
    return (int64_t)run;
}

/* a block of one key: its weights' total to the key's sum */
#define SUM_WEIGHTS(CTYPE, WIDE, UTYPE)                                                    \
    do {                                                                                   \
        const CTYPE *restrict w = (const CTYPE *)s->wb.buf;                                \
        for (Py_ssize_t i = 0; i < s->n; i++) sums[s->key] += (int64_t)(WIDE)w[i];         \
    } while (0)
static int count_block(const Src *s, int64_t *count, int64_t *restrict sums,
                       Py_ssize_t n_groups) {
    if (!s->keys) { /* one group for every row (or none) */
        if (lens_sum(s->lens, s->lw, s->n) != s->nh) return 3;
        if (s->key < 0) return 0;
        count[s->key] += s->nh;
        switch (s->wtype) { INT_TYPE_CASES(SUM_WEIGHTS) }
        return 0;
    }
    switch (s->lw) {
    case 1: return count_u8(s, count, sums, n_groups);
    case 2: return count_u16(s, count, sums, n_groups);
    case 4: return count_u32(s, count, sums, n_groups);
    default: return count_u64(s, count, sums, n_groups);
    }
}

/* n hashes into a streamed group's registers (reg_max, not a branch on a higher rank: the
 * runs of a by-name union, 1,000 groups, 44.7 -> 40.6 ms; a total's registers, long full,
 * 12.1 -> 12.5 ms) */
static inline void reg_add_all(uint8_t *restrict r, const uint64_t *restrict h, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        __builtin_prefetch(h + j + PREFETCH_AHEAD);
        reg_max(r, h[j]);
    }
}

/* Pass 2 over a block, CHUNK hashes at a time: first each hash's destination (a row's, written
 * eight times, then the position moves by the row's length: no branch on it below nine; four
 * times left rows of five to eight to a mispredicted loop, 3-4% of the union), then each hash
 * into its group's registers or, the rare case, into a light group's partition region (one
 * unpredictable branch on a row's length of one to a few hashes cost ~15 cycles per row). A
 * destination is looked up once per row, not per hash: a streamed group's registers as their
 * address (even: 16 KiB apart in an 8-byte aligned buffer), any other group g as 2g + 1 (odd;
 * -1: no group). The group id per hash and reg[g] looked up for each cost two of the 21
 * instructions of a streamed hash: a country x device union's query, p25 of 15, three rounds,
 * one thread 122.2 -> 115.5 ms, two threads 67.4 -> 64.6. */
#define CHUNK 1024
/* A light hash's store goes to its group's region, one of hundreds written a hash at a time:
 * each new line of a region missed every cache, and the stores waited on it (a quarter of
 * pass 2's samples on that one store, country x device, with a fifth of the hashes light). A
 * prefetch of the line LIGHT_AHEAD hashes on (two lines: long before the group's next hashes
 * come) has it in cache by then: the union of a country x device scan, one thread, p25 of 15,
 * 104.1 -> 94.1 ms; two threads, p25 of 31, 58.3 -> 52.0 (8, 32 and 64 ahead: within 1.5%). */
#define LIGHT_AHEAD 16
/* A row of more hashes goes into its group as one run (a copy, or reg_add_all), not hash by
 * hash: the rows of partials being merged hold hundreds (merge of two partials' 1,000 groups,
 * 985k hashes: pass 2 ~4 ms of 17 before) */
#define LONG_ROW 32
typedef struct {
    uint8_t **reg; /* indexed by g >= -1: a streamed group's registers, else NULL */
    uint64_t *dst0;
    int64_t *pos;
} Spread;

/* n hashes of one row (or block) into group g: into its registers, or appended to its
 * partition region. Inlined, so that the x86-64-v3 clones of pass 2 run their own copy (lzcnt
 * for the rank), not a call to the baseline one: by name, one thread, p25 of 15, 76.5 -> 72.5
 * ms (its rows come in runs, each run one call). */
static inline __attribute__((always_inline)) void run_into(const Spread *sp, int64_t g,
                                                          const uint64_t *h, int64_t n) {
    if (g < 0 || n == 0) return;
    if (sp->reg[g]) {
        reg_add_all(sp->reg[g], h, n);
        return;
    }
    memcpy(sp->dst0 + sp->pos[g], h, (size_t)n * 8);
    sp->pos[g] += n;
}

/* Whether a block's rows come in runs of one group, four rows long on average: a segment's
 * rows are sorted by its dimensions, so a grouping by the leading one (or a time bucket) sees
 * each group's rows together, and a run's hashes go to their group with no per-hash group
 * lookup (a by-page-name query of 1,000 groups, 23M hashes, two threads: 114 -> 99-106 ms). */
static int in_runs(const int64_t *restrict k, Py_ssize_t n) {
    int64_t changes = 0;
    for (Py_ssize_t i0 = 1; i0 < n; i0 += 256) { /* a tile at a time: rows of groups mixed */
        const Py_ssize_t end = n - i0 < 256 ? n : i0 + 256;  /* end their look early */
        for (Py_ssize_t i = i0; i < end; i++) changes += k[i] != k[i - 1];
        if (4 * changes >= n) return 0;
    }
    return 1;
}

/* Where group g's hashes go in pass 2's chunk loop: its registers' address when it streams
 * (even: each group's 16 KiB sit at a multiple of N_REG in a Scratch's uint64 array), else
 * 2g + 1 (odd; reg[-1] is NULL, so no group, g = -1, comes out as -1). */
static inline int64_t destination(uint8_t *const *reg, int64_t g) {
    return reg[g] ? (int64_t)(uintptr_t)reg[g] : (int64_t)(((uint64_t)g << 1) | 1);
}

#define DEFINE_SPREAD(LT, NAME)                                                              \
    CLONES_V3 static void NAME(const Src *s, const Spread *sp) {                            \
        const LT *restrict ln = s->lens;                                                    \
        const int64_t *restrict keys = s->keys;                                             \
        const uint64_t *restrict h = s->hashes;                                             \
        uint8_t **const reg = sp->reg;                                                      \
        uint64_t *const dst0 = sp->dst0; /* held here: a light hash's store cannot change */\
        int64_t *const pos = sp->pos;    /* them, where sp's fields were read again */      \
        int64_t dest[CHUNK + 8]; /* per hash of the chunk: its destination */               \
        Py_ssize_t i = 0;                                                                   \
        int64_t a = 0;                                                                      \
        if (in_runs(keys, s->n)) { /* rows of one group together: each run at once */       \
            while (i < s->n) {                                                              \
                const int64_t g = keys[i];                                                  \
                int64_t len = 0;                                                            \
                do len += (int64_t)ln[i++];                                                 \
                while (i < s->n && keys[i] == g);                                           \
                run_into(sp, g, h + a, len);                                                \
                a += len;                                                                   \
            }                                                                               \
            return;                                                                         \
        }                                                                                   \
        while (i < s->n) {                                                                  \
            const int64_t a0 = a;                                                           \
            int64_t m = 0;                                                                  \
            for (; i < s->n; i++) {                                                         \
                __builtin_prefetch(keys + i + 64);                                          \
                const int64_t len = ln[i], g = keys[i];                                     \
                if (len > LONG_ROW || m + len > CHUNK) break;                               \
                const int64_t v = destination(reg, g);                                      \
                dest[m] = dest[m + 1] = dest[m + 2] = dest[m + 3] = v;                      \
                dest[m + 4] = dest[m + 5] = dest[m + 6] = dest[m + 7] = v;                  \
                for (int64_t t = 8; t < len; t++) dest[m + t] = v;                          \
                m += len;                                                                   \
            }                                                                               \
            const uint64_t *restrict hc = h + a0;                                           \
            for (int64_t j = 0; j < m; j++) {                                               \
                __builtin_prefetch(hc + j + PREFETCH_AHEAD);                                \
                const int64_t v = dest[j];                                                  \
                if (!(v & 1)) reg_max((uint8_t *)(uintptr_t)v, hc[j]);                      \
                else if (v >= 0) { /* light (-1: none) */                                   \
                    const int64_t p = pos[v >> 1]++;                                        \
                    __builtin_prefetch(dst0 + p + LIGHT_AHEAD); /* see LIGHT_AHEAD */       \
                    dst0[p] = hc[j];                                                        \
                }                                                                           \
            }                                                                               \
            a += m;                                                                         \
            if (i < s->n && ln[i] > LONG_ROW) { /* a long row: its hashes as one run */     \
                run_into(sp, keys[i], h + a, (int64_t)ln[i]);                               \
                a += (int64_t)ln[i];                                                        \
                i++;                                                                        \
            }                                                                               \
        }                                                                                   \
    }
DEFINE_SPREAD(uint8_t, spread_u8)
DEFINE_SPREAD(uint16_t, spread_u16)
DEFINE_SPREAD(uint32_t, spread_u32)
DEFINE_SPREAD(uint64_t, spread_u64)

static void spread_block(const Src *s, const Spread *sp) {
    if (!s->keys) { /* every row in one group: its hashes in one run, the rows don't matter */
        run_into(sp, s->key, s->hashes, s->nh);
        return;
    }
    switch (s->lw) {
    case 1: spread_u8(s, sp); break;
    case 2: spread_u16(s, sp); break;
    case 4: spread_u32(s, sp); break;
    default: spread_u64(s, sp); break;
    }
}

/* v (not 0: the empty slot) into an open-addressing table of mask + 1 slots: 1 when new */
static inline int table_insert(uint64_t *restrict table, uint32_t mask, uint64_t v) {
    uint32_t t = (uint32_t)(v ^ (v >> 29)) & mask;
    while (table[t] && table[t] != v) t = (t + 1) & mask;
    if (table[t]) return 0;
    table[t] = v;
    return 1;
}

/* Pass 3's buffers for a group's region */
typedef struct {
    uint64_t *table, *sort_tmp, *bits;
    uint32_t *sort_cnt;
    size_t tcap_max; /* the table's size: a power of two, at least 2 (sparse_max + 1) */
} Dedup;

/* A group's hashes h[0..nh) (its region, this call's scratch: sorted in place where that
 * pays) into o, sorted, each value once: how many, or sparse_max + 1 once there are more (o
 * then holds no meaning). */
CLONES_V3
static Py_ssize_t dedup_region(uint64_t *h, int64_t nh, uint64_t *o, Py_ssize_t sparse_max,
                               const Dedup *w) {
    Py_ssize_t m = 0;
    /* the region is the group's rows one after another: of partials' rows (sparse sets, each
     * sorted) often one or two ascending runs, merged here without a table or a sort; rows of
     * a few hashes each (a scan) go to the table after a look at their first few hashes */
    int64_t b = nh; /* where the second run starts */
    int runs = 1;
    for (int64_t j = 1; j < nh && runs <= 2; j++)
        if (h[j] <= h[j - 1]) {
            if (runs == 1) b = j;
            runs++;
        }
    /* a scan's rows past sparse_max hashes: a bitmap of 2^17 bits on the hashes' top bits
     * counts at most one set bit per distinct hash, so more than sparse_max set bits make the
     * group dense for certain, and its hashes go straight to registers (no table of the first
     * sparse_max + 1 of them: a country x device union's middling groups, 1.9M hashes, 21.8 ->
     * 14.1 Mcycles) */
    if (runs > 2 && nh > sparse_max) {
        uint64_t *restrict bits = w->bits;
        memset(bits, 0, sizeof(uint64_t) << (BITMAP_BITS - 6));
        int64_t set = 0;
        for (int64_t t = 0; t < nh; t++) {
            const uint64_t k = h[t] >> (64 - BITMAP_BITS);
            const uint64_t x = bits[k >> 6], bit = (uint64_t)1 << (k & 63);
            set += (x & bit) == 0;
            bits[k >> 6] = x | bit;
        }
        if (set > sparse_max) return sparse_max + 1;
    }
    if (runs <= 2) return merge_unique(h, b, h + b, nh - b, o, sparse_max + 1);
    if (nh <= ((int64_t)1 << BUCKET_BITS_MAX) && (size_t)nh <= w->tcap_max) {
        /* up to 4,096 hashes: sorted where they lie, then each value once -- cheaper than the
         * table and the sort of its output (880 groups of a by-name union, 1.4M hashes: 26.6
         * -> 21.2 Mcycles) */
        sort_hashes(h, nh, w->sort_tmp, w->sort_cnt);
        o[0] = h[0];
        m = 1;
        for (int64_t t = 1; t < nh; t++) {
            o[m] = h[t];
            m += h[t] != h[t - 1];
        }
        return m;
    }
    size_t tcap = 16;
    while (tcap < w->tcap_max && tcap < 2 * (size_t)nh) tcap *= 2;
    const uint32_t mask = (uint32_t)tcap - 1;
    uint64_t *restrict table = w->table;
    memset(table, 0, tcap * sizeof(uint64_t));
    /* each new hash goes to the table and straight to the output */
    int has_zero = 0;
    for (int64_t j = 0; j < nh && m <= sparse_max; j++) {
        const uint64_t v = h[j];
        if (v == 0) {
            if (!has_zero) o[m++] = 0;
            has_zero = 1;
            continue;
        }
        if (table_insert(table, mask, v)) o[m++] = v;
    }
    if (m <= sparse_max) sort_hashes(o, m, w->sort_tmp, w->sort_cnt);
    return m;
}

/* The groups read again: set r (0, 1, ...) a table of tcap slots (tab + r * tcap) of its
 * distinct hashes but 0, m[r] of them counting 0 (zero[r]: seen), filled up to sparse_max + 1
 * (then the group is dense: no more inserts) */
typedef struct {
    uint64_t *tab;
    int64_t *m;
    uint8_t *zero;
    uint32_t tcap;
    Py_ssize_t sparse_max;
} Sets;

static void set_add_all(const Sets *ss, int64_t r, const uint64_t *restrict h, int64_t n) {
    int64_t m = ss->m[r];
    uint64_t *restrict table = ss->tab + (size_t)r * ss->tcap;
    const uint32_t mask = ss->tcap - 1;
    for (int64_t j = 0; j < n && m <= ss->sparse_max; j++) {
        if (h[j] == 0) {
            m += !ss->zero[r];
            ss->zero[r] = 1;
        } else {
            m += table_insert(table, mask, h[j]);
        }
    }
    ss->m[r] = m;
}

/* The rows of the groups read again (at[g] >= 0: their set; -1 for every other group) into
 * their sets */
#define DEFINE_RESCAN(LT, NAME)                                                              \
    static void NAME(const Src *s, const int64_t *restrict at, const Sets *ss) {            \
        const LT *restrict ln = s->lens;                                                    \
        const int64_t *restrict keys = s->keys;                                             \
        int64_t a = 0;                                                                      \
        for (Py_ssize_t i = 0; i < s->n; i++) {                                             \
            const int64_t g = keys[i], len = (int64_t)ln[i];                                \
            if (g >= 0 && at[g] >= 0) set_add_all(ss, at[g], s->hashes + a, len);           \
            a += len;                                                                       \
        }                                                                                   \
    }
DEFINE_RESCAN(uint8_t, rescan_u8)
DEFINE_RESCAN(uint16_t, rescan_u16)
DEFINE_RESCAN(uint32_t, rescan_u32)
DEFINE_RESCAN(uint64_t, rescan_u64)

static void rescan_block(const Src *s, const int64_t *at, const Sets *ss) {
    if (!s->keys) {
        if (s->key >= 0 && at[s->key] >= 0) set_add_all(ss, at[s->key], s->hashes, s->nh);
        return;
    }
    switch (s->lw) {
    case 1: rescan_u8(s, at, ss); break;
    case 2: rescan_u16(s, at, ss); break;
    case 4: rescan_u32(s, at, ss); break;
    default: rescan_u64(s, at, ss); break;
    }
}

/* -- the union's units and lanes -------------------------------------------------------------
 * A scan's union runs on up to `threads` threads (the query's scan threads, lent as a Job: the
 * engine hands every block of the scan to one union, instead of a union per thread and a merge
 * of their partials -- a country x device query's two unions and their merge, 4.2 ms of ~75,
 * each writing up to 16 KiB of registers per group only to have them maxed together). Work
 * comes in units, taken one at a time by whichever thread ("lane": the union's own is 0) is
 * free, so a core slowed by a neighbour takes fewer (one unit per thread left one of two with
 * 15-20% more to do). Passes 1 and 2 split the blocks in runs, four per lane (balanced by rows +
 * hashes): a unit counts, then spreads, its own blocks; a light group's region holds unit 0's
 * hashes, then unit 1's, ... (the order of one thread). Registers need no order: each lane
 * streams into registers of its own, maxed together after pass 2. Pass 3 splits the groups in
 * chunks, each writing its outputs from its bounds on; they are moved together after. The
 * result is byte for byte that of one thread. */
#define MAX_THREADS 16
#define DENSE_IN ((int64_t)1 << 62)      /* in a group's count: it has a dense input row */

/* pass 3's rough cost of a group (a streamed group's, or a light one's of nh hashes): the few
 * hashes of a group more likely sparse cost more each (sorted) than the many of one more
 * likely dense (a bitmap, then registers) */
#define PASS3_COST(slot, nh, sparse_max)                                                  \
    ((slot) >= 0 ? 400 : (nh) <= 8 * (sparse_max) ? 3 * (nh) : (nh))

typedef struct Union Union;
typedef struct Unit { /* a unit of work: a run of blocks (passes 1, 2), a chunk of groups (3) */
    Union *u;
    Py_ssize_t b0, b1;           /* its blocks (passes 1 and 2) */
    Py_ssize_t g0, g1;           /* its groups (pass 3) */
    int64_t *count, *sums;       /* pass 1's per group; then count is pass 2's write positions */
    int64_t hbase, dbase;        /* pass 3: where its hashes and registers go in the outputs */
    Py_ssize_t n_out, n_dense;   /* pass 3: how many it wrote */
    Buf dg;                      /* pass 3: its dense groups */
    int err;
    int zero;                    /* pass 1 zeroes its count and sums first (a kept buffer's) */
} Unit;

typedef struct { /* a thread's own, whichever units it takes */
    int64_t *kbuf;               /* the computed keys of the block at hand */
    uint8_t **reg;               /* by g + 1: its registers of a streamed group (lane 0's: all
                                    lanes' maxed, after pass 2) */
    Scratch *hreg;               /* which they are in */
    Dedup w;                     /* pass 3's buffers for a group's region */
} Lane;

struct Union { /* what the units share (read-only in a pass, but for each's own part) */
    Src *src;
    Lane *lanes;
    Py_ssize_t n_groups, sparse_max;
    const int64_t *slot, *start, *rstart, *sets_m;
    const uint8_t *sets_zero;
    Sets ss;
    uint64_t *part;  /* light groups' partition */
    int64_t *out_len;
    uint64_t *oh;
    uint8_t *out_r;
    int64_t *out_ct; /* with counts: each dense group's register histogram (Q_BITS + 2 each) */
};

static void pass1_unit(Unit *wk, int lane) {
    const Union *u = wk->u;
    if (wk->zero) { /* on the unit's own thread, not before the pass on one */
        memset(wk->count, 0, ((size_t)u->n_groups + 1) * sizeof(int64_t));
        if (wk->sums) memset(wk->sums, 0, ((size_t)u->n_groups + 1) * sizeof(int64_t));
    }
    for (Py_ssize_t b = wk->b0; !wk->err && b < wk->b1; b++) {
        Src *s = &u->src[b];
        if (s->computed) make_keys(s, u->lanes[lane].kbuf);
        wk->err = count_block(s, wk->count, wk->sums, u->n_groups);
        for (Py_ssize_t d = 0; !wk->err && d < s->k; d++) {
            if (s->drows[d] < 0 || s->drows[d] >= s->n) wk->err = 1;
            else if (key_at(s, s->drows[d]) >= 0) wk->count[key_at(s, s->drows[d])] |= DENSE_IN;
        }
    }
}

static void pass2_unit(Unit *wk, int lane) {
    const Union *u = wk->u;
    const Spread sp = {u->lanes[lane].reg + 1, u->part, wk->count};
    for (Py_ssize_t b = wk->b0; b < wk->b1; b++) {
        if (u->src[b].computed) make_keys(&u->src[b], u->lanes[lane].kbuf);
        spread_block(&u->src[b], &sp);
    }
}

/* pass 3: per group of the range in order, the sparse hashes sorted, or the registers.
 * MIDDLE: a partitioned group past STREAM_FACTOR * sparse_max hashes (one of the large groups
 * that did not stream) goes to registers first, and only with at most sparse_max registers set
 * (then it may hold at most sparse_max distinct hashes) to dedup_region: such a group is
 * nearly always dense, and dedup_region's bitmap, a pass over its hashes before the pass into
 * registers, found that out at the cost of a second pass (country x device, 206 middle groups,
 * 4.6M hashes: its union, two threads, p25 of 31, 49.0 -> 48.0 ms; by name, one thread, p25
 * of 15, 70.1 -> 67.7). */
CLONES_V3 static void pass3_unit(Unit *wk, int lane) {
    const Union *u = wk->u;
    const Py_ssize_t sparse_max = u->sparse_max;
    const Sets *ss = &u->ss;
    const Dedup *w = &u->lanes[lane].w;
    uint8_t **const reg = u->lanes[0].reg; /* every lane's maxed */
    for (Py_ssize_t g = wk->g0; !wk->err && g < wk->g1; g++) {
        uint64_t *o = u->oh + wk->hbase + wk->n_out;
        Py_ssize_t m = sparse_max + 1; /* a streamed group's registers, unless in a set */
        uint64_t *h = NULL;
        int64_t nh = 0;
        const int64_t sl = u->slot[g];
        int ready = 0; /* the registers are made (a middle group's) */
        if (sl < 0) { /* the group's region */
            h = u->part ? u->part + u->start[g] + SLACK * g : NULL;
            nh = u->start[g + 1] - u->start[g];
            if (nh == 0) continue;
            if (nh > STREAM_FACTOR * sparse_max) { /* see MIDDLE */
                if (buf_reserve(&wk->dg, 8)) {
                    wk->err = 2;
                    break;
                }
                uint8_t *r = u->out_r + (size_t)(wk->dbase + wk->n_dense) * N_REG;
                memset(r, 0, N_REG);
                for (int64_t j = 0; j < nh; j++) reg_max(r, h[j]);
                ready = registers_set(r) > sparse_max;
            }
            m = ready ? sparse_max + 1 : dedup_region(h, nh, o, sparse_max, w);
        } else if (u->rstart[sl] >= 0 && u->sets_m[u->rstart[sl]] <= sparse_max) {
            const int64_t r = u->rstart[sl];
            const uint64_t *t = ss->tab + (size_t)r * ss->tcap;
            m = 0;
            if (u->sets_zero[r]) o[m++] = 0;
            for (uint32_t j = 0; j < ss->tcap; j++)
                if (t[j]) o[m++] = t[j];
            sort_hashes(o, m, w->sort_tmp, w->sort_cnt);
        }
        if (m > sparse_max) { /* registers: a streamed group's, or from every hash of the region */
            if (buf_reserve(&wk->dg, 8)) {
                wk->err = 2;
                break;
            }
            const size_t d = (size_t)(wk->dbase + wk->n_dense++);
            uint8_t *r = u->out_r + d * N_REG;
            if (sl >= 0) {
                memcpy(r, reg[g + 1], N_REG);
            } else if (!ready) {
                memset(r, 0, N_REG);
                for (int64_t j = 0; j < nh; j++) reg_max(r, h[j]);
            }
            if (u->out_ct) reg_histogram(r, u->out_ct + d * (Q_BITS + 2)); /* in cache now */
            memcpy(wk->dg.p + wk->dg.len, &g, 8);
            wk->dg.len += 8;
            continue;
        }
        wk->n_out += m;
        u->out_len[g] = m;
    }
}

/* A union's helpers (Job): threads of the caller's (the query's scan threads) lent to one union
 * call. Each pass posts its units; the union's own thread and every helper claim them
 * one at a time, so the union never waits on a helper that has not started (it runs what is
 * left itself) and a helper that comes late finds nothing. No thread is made here: the query
 * is bounded by its scan threads, and they stay warm. */
typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv;
    Unit *wk;                /* the pass's units, fn, how many; fn NULL between passes */
    void (*fn)(Unit *, int);
    int n, next, finished;   /* units claimed, units done */
    int lanes, max_lanes;    /* lanes given (the union's thread has 0), and how many it has */
    int taken, closed;       /* a union has it; it is over (its helpers return) */
} Job;

/* fn on every unit: with a job, its helpers take units as this thread (lane 0) does, and this
 * thread waits for the last; without, one after another here */
static void run_units(Job *job, Unit *wk, int n, void (*fn)(Unit *, int)) {
    if (!job || n == 1) {
        for (int t = 0; t < n; t++) fn(&wk[t], 0);
        return;
    }
    pthread_mutex_lock(&job->mu);
    job->wk = wk;
    job->fn = fn;
    job->n = n;
    job->next = job->finished = 0;
    pthread_cond_broadcast(&job->cv);
    while (job->next < n) {
        const int t = job->next++;
        pthread_mutex_unlock(&job->mu);
        fn(&wk[t], 0);
        pthread_mutex_lock(&job->mu);
        job->finished++;
    }
    while (job->finished < n) pthread_cond_wait(&job->cv, &job->mu);
    job->fn = NULL;
    pthread_mutex_unlock(&job->mu);
}

static void job_close(Job *job) {
    pthread_mutex_lock(&job->mu);
    job->closed = 1;
    pthread_cond_broadcast(&job->cv);
    pthread_mutex_unlock(&job->mu);
}

/* Job.help(): work on the job's units until its union is over (GIL released) */
static PyObject *job_help(PyObject *self, PyObject *unused) {
    Job *job = (Job *)self;
    int lane = -1; /* this thread's, from its first unit: its registers and key buffer */
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&job->mu);
    while (!job->closed) {
        if (job->fn && job->next < job->n) {
            if (lane < 0 && job->lanes >= job->max_lanes) break; /* as many as it has lanes */
            if (lane < 0) lane = job->lanes++;
            const int t = job->next++;
            void (*fn)(Unit *, int) = job->fn;
            Unit *wk = job->wk;
            pthread_mutex_unlock(&job->mu);
            fn(&wk[t], lane);
            pthread_mutex_lock(&job->mu);
            if (++job->finished == job->n) pthread_cond_broadcast(&job->cv);
        } else {
            pthread_cond_wait(&job->cv, &job->mu);
        }
    }
    pthread_mutex_unlock(&job->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Job.close(): the helpers return (the union closes its job itself when it returns; this is
 * for a union that never started, e.g. one that raised before) */
static PyObject *job_close_py(PyObject *self, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS
    job_close((Job *)self);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *job_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (!PyArg_ParseTuple(args, ":Job")) return NULL;
    Job *job = (Job *)type->tp_alloc(type, 0);
    if (!job) return NULL;
    pthread_mutex_init(&job->mu, NULL);
    pthread_cond_init(&job->cv, NULL);
    return (PyObject *)job;
}

static void job_dealloc(PyObject *self) {
    Job *job = (Job *)self;
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
    Py_TYPE(self)->tp_free(self);
}

static PyMethodDef job_methods[] = {
    {"help", job_help, METH_NOARGS, "help(): run the job's union's units until it is over."},
    {"close", job_close_py, METH_NOARGS, "close(): the job is over; its helpers return."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject JobType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gumshoe._sketch.Job",
    .tp_basicsize = sizeof(Job),
    .tp_new = job_new,
    .tp_dealloc = job_dealloc,
    .tp_methods = job_methods,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Job(): threads lent to one union call: each calls help() while it runs.",
};

/* the first error of the units (in block order: as one thread would have met it) */
static int units_err(const Unit *wk, int n) {
    for (int t = 0; t < n; t++)
        if (wk[t].err) return wk[t].err;
    return 0;
}

/* Whether obj is a tuple of lo to hi items: then *first is its first (the others by
 * PyTuple_GET_ITEM); else the caller parses it with PyArg_ParseTuple, for its errors. A scan's
 * union parses a few tuples per block, and a format each cost ~1 of ~3 us a block. */
static int tuple_items(PyObject *obj, Py_ssize_t lo, Py_ssize_t hi, PyObject **first) {
    if (!PyTuple_CheckExact(obj) || PyTuple_GET_SIZE(obj) < lo || PyTuple_GET_SIZE(obj) > hi)
        return 0;
    *first = PyTuple_GET_ITEM(obj, 0);
    return 1;
}

static PyObject *sketch_union(PyObject *self, PyObject *args) {
    PyObject *blocks_obj;
    Py_ssize_t n_groups, sparse_max, threads = 1;
    PyObject *job_obj = Py_None;
    int want_counts = 0;
    if (!PyArg_ParseTuple(args, "Onn|nOp:union", &blocks_obj, &n_groups, &sparse_max, &threads,
                          &job_obj, &want_counts))
        return NULL;
    Job *job = NULL; /* helpers, one union's: closed when this returns */
    if (job_obj != Py_None) {
        if (!PyObject_TypeCheck(job_obj, &JobType)) {
            PyErr_SetString(PyExc_TypeError, "union: job must be a Job");
            return NULL;
        }
        job = (Job *)job_obj;
        if (job->taken) {
            PyErr_SetString(PyExc_ValueError, "union: a job helps one union");
            return NULL;
        }
        job->taken = 1;
    }
    PyObject *seq = PySequence_Fast(blocks_obj, "union: blocks must be a sequence");
    if (!seq) {
        if (job) job_close(job);
        return NULL;
    }
    const Py_ssize_t nb = PySequence_Fast_GET_SIZE(seq);
    Src *src = calloc(nb ? (size_t)nb : 1, sizeof(Src));
    PyObject *result = NULL, *out_lens = NULL;
    int64_t *sums = NULL; /* with weights: sums[g], group g's */
    Pooled *out_h = NULL, *out_rg = NULL; /* the sparse hashes; the dense groups' registers */
    Pooled *out_ct = NULL; /* with counts: the dense groups' register histograms */
    int weighed = 0; /* some block has weights: their sums per group are returned too */
    int64_t *count = NULL, *start = NULL, *slot = NULL;
    int64_t *kbuf = NULL;
    Py_ssize_t n_streamed = 0;
    int64_t *hcount = NULL, *rstart = NULL, *sets_m = NULL; /* rstart: a streamed group's set */
    uint8_t *sets_zero = NULL;
    Scratch *part = NULL, *resc = NULL;
    Scratch *ucount = NULL; /* the units' counts and sums, with more than one unit */
    Unit *wk = NULL, *ck = NULL; /* the units: passes 1-2, n_units; pass 3, n_chunks */
    Lane *lanes = NULL;          /* n_lanes threads' own */
    int n_units = 0, n_chunks = 0, n_lanes = 0;
    Buf out_dg = {0};
    Py_ssize_t got = 0; /* blocks whose buffers are held */
    Py_ssize_t n_dense = 0; /* registers written to out_rg */
    if (!src) {
        PyErr_NoMemory();
        goto done;
    }
    if (n_groups < 0 || sparse_max < 0 || sparse_max > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "union: bad n_groups or sparse_max");
        goto done;
    }
    for (; got < nb; got++) {
        Src *s = &src[got];
        PyObject *lo, *ho, *dro, *rgo, *ko, *wo = Py_None;
        s->wtype = T_BAD;
        PyObject *item = PySequence_Fast_GET_ITEM(seq, got);
        if (tuple_items(item, 5, 6, &lo)) { /* a block: the common case, without a format */
            ho = PyTuple_GET_ITEM(item, 1);
            dro = PyTuple_GET_ITEM(item, 2);
            rgo = PyTuple_GET_ITEM(item, 3);
            ko = PyTuple_GET_ITEM(item, 4);
            if (PyTuple_GET_SIZE(item) == 6) wo = PyTuple_GET_ITEM(item, 5);
        } else if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "union: a block must be a tuple");
            goto done;
        } else if (!PyArg_ParseTuple(item, "OOOOO|O:union block", &lo, &ho, &dro, &rgo, &ko,
                                     &wo)) {
            goto done;
        }
        const int has_parts = PyTuple_Check(ko), has_keys = !has_parts && !PyLong_Check(ko);
        if (has_parts) { /* (base, [(codes, offset, stride, nil), ...][, mask]) */
            PyObject *base, *parts, *mask = Py_None;
            if (tuple_items(ko, 2, 3, &base)) {
                parts = PyTuple_GET_ITEM(ko, 1);
                if (PyTuple_GET_SIZE(ko) == 3) mask = PyTuple_GET_ITEM(ko, 2);
            } else if (!PyArg_ParseTuple(ko, "OO|O:union key parts", &base, &parts, &mask)) {
                goto done;
            }
            s->computed = 1;
            if (mask != Py_None && get_buf(mask, &s->mb, 0, 1, "mask") < 0) {
                got++;
                goto done;
            }
            s->key = PyLong_AsLongLong(base);
            if (s->key == -1 && PyErr_Occurred()) goto done;
            PyObject *pseq = PySequence_Fast(parts, "union: key parts must be a sequence");
            if (!pseq) goto done;
            const Py_ssize_t np = PySequence_Fast_GET_SIZE(pseq);
            int bad = np > MAX_KEY_PARTS;
            for (Py_ssize_t q = 0; !bad && q < np; q++) {
                KeyPart *kp = &s->part[q];
                PyObject *codes, *nil, *pi = PySequence_Fast_GET_ITEM(pseq, q);
                long long off, st;
                if (tuple_items(pi, 4, 4, &codes) && PyLong_CheckExact(PyTuple_GET_ITEM(pi, 1)) &&
                    PyLong_CheckExact(PyTuple_GET_ITEM(pi, 2))) {
                    off = PyLong_AsLongLong(PyTuple_GET_ITEM(pi, 1));
                    st = PyLong_AsLongLong(PyTuple_GET_ITEM(pi, 2));
                    nil = PyTuple_GET_ITEM(pi, 3);
                    if ((off == -1 || st == -1) && PyErr_Occurred()) {
                        bad = 2;
                        break;
                    }
                } else if (!PyTuple_Check(pi)) {
                    PyErr_SetString(PyExc_TypeError, "union: a key part must be a tuple");
                    bad = 2;
                    break;
                } else if (!PyArg_ParseTuple(pi, "OLLO:key part", &codes, &off, &st, &nil)) {
                    bad = 2;
                    break;
                }
                if (get_buf(codes, &kp->codes, 0, 0, "codes") < 0) {
                    bad = 2;
                    break;
                }
                s->n_parts++;
                kp->offset = off;
                kp->stride = st;
                kp->type = type_of(&kp->codes);
                kp->has_nil = nil != Py_None;
                if (kp->has_nil && get_buf(nil, &kp->nil, 0, 1, "nil") < 0) {
                    bad = 2;
                    break;
                }
                if (!is_int_type(kp->type)) bad = 1;
            }
            Py_DECREF(pseq);
            if (bad) {
                if (bad == 1) PyErr_SetString(PyExc_ValueError,
                                              "union: key parts must be up to 16 integer codes");
                got++;
                goto done;
            }
        } else if (!has_keys) {
            s->key = PyLong_AsLongLong(ko);
            if (s->key == -1 && PyErr_Occurred()) goto done;
        }
        if (get_buf(lo, &s->lb, 0, 0, "lens") < 0) goto done;
        if (get_buf(ho, &s->hb, 0, 8, "hashes") < 0 || get_buf(dro, &s->dr, 0, 8, "dense_rows") < 0 ||
            get_buf(rgo, &s->rg, 0, 1, "registers") < 0 ||
            (has_keys && get_buf(ko, &s->kb, 0, 8, "keys") < 0) ||
            (wo != Py_None && get_buf(wo, &s->wb, 0, 0, "weights") < 0)) {
            got++; /* release what this block holds */
            goto done;
        }
        if (wo != Py_None) {
            s->wtype = type_of(&s->wb);
            weighed = 1;
        }
        s->lens = s->lb.buf;
        s->lw = (int)s->lb.itemsize;
        s->hashes = s->hb.buf;
        s->drows = s->dr.buf;
        s->regs = s->rg.buf;
        s->keys = has_keys ? s->kb.buf : NULL;
        s->n = s->lw ? s->lb.len / s->lw : 0;
        s->nh = s->hb.len / 8;
        s->k = s->dr.len / 8;
        if ((s->lw != 1 && s->lw != 2 && s->lw != 4 && s->lw != 8) || s->rg.len != s->k * N_REG ||
            (has_keys && s->kb.len != s->n * 8) ||
            (has_parts && !parts_fit(s)) ||
            (!has_keys && !has_parts && (s->key < -1 || s->key >= n_groups))) {
            got++;
            PyErr_SetString(PyExc_ValueError, "union: inconsistent sketch column or keys");
            goto done;
        }
        if (wo != Py_None && (!is_int_type(s->wtype) || s->wb.len != s->n * s->wb.itemsize)) {
            got++;
            PyErr_SetString(PyExc_ValueError, "union: weights must be integers, one per row");
            goto done;
        }
        s->fit32 = has_parts && keys_fit32(s);
    }
    Py_ssize_t max_n = 0; /* a key buffer of blocks with key parts (each lane has one) */
    for (Py_ssize_t b = 0; b < nb; b++)
        if (src[b].computed && src[b].n > max_n) max_n = src[b].n;
    if (max_n && !(kbuf = malloc((size_t)max_n * sizeof(int64_t)))) {
        PyErr_NoMemory();
        goto done;
    }
    count = calloc((size_t)n_groups + 1, sizeof(int64_t));
    start = calloc((size_t)n_groups + 1, sizeof(int64_t));
    if (weighed && !(sums = calloc((size_t)n_groups + 1, sizeof(int64_t)))) { /* never 0 B */
        PyErr_NoMemory();
        goto done;
    }
    slot = malloc(((size_t)n_groups + 1) * sizeof(int64_t));
    out_lens = PyBytes_FromStringAndSize(NULL, n_groups * 8);
    if (!count || !start || !slot) {
        PyErr_NoMemory();
        goto done;
    }
    if (!out_lens) goto done;
    /* the lanes (`threads`, at most one per block) and the units of passes 1 and 2: runs of
     * blocks balanced by rows + hashes, four per lane (one per lane for a large key space:
     * each unit counts into an array of its own); one unit counts into the arrays above, more
     * each into its own, added up there after. Their arrays are one kept buffer (Scratch), not
     * an allocation each: 16 of 105 KiB for a country x device scan (13,107 keys), whose
     * page faults and zeroing were ~0.7 ms of the union's serial start; each unit zeroes its
     * own in pass 1 (two threads, p25 of 41: 53.6 -> 51.9 ms). */
    int64_t work = 0;
    for (Py_ssize_t b = 0; b < nb; b++) work += src[b].n + src[b].nh;
    n_lanes = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : (int)threads;
    if (n_lanes > nb) n_lanes = nb > 0 ? (int)nb : 1;
    n_units = n_lanes == 1 ? 1 : n_groups > ((Py_ssize_t)1 << 16) ? n_lanes : 4 * n_lanes;
    if (nb > 0 && n_units > nb) n_units = (int)nb;
    if (!(wk = calloc((size_t)n_units, sizeof(Unit))) ||
        !(lanes = calloc((size_t)n_lanes, sizeof(Lane)))) {
        PyErr_NoMemory();
        goto done;
    }
    Union un = {src, lanes, n_groups, sparse_max, slot, start, NULL, NULL, NULL, {0}, NULL, NULL,
                NULL, NULL, NULL};
    lanes[0].kbuf = kbuf;
    for (int t = 1; t < n_lanes; t++)
        if (max_n && !(lanes[t].kbuf = malloc((size_t)max_n * sizeof(int64_t)))) {
            PyErr_NoMemory();
            goto done;
        }
    for (Py_ssize_t b = 0, t = 0, acc = 0; t < n_units; t++) {
        Unit *x = &wk[t];
        x->u = &un;
        x->b0 = b;
        while (b < nb && (t == n_units - 1 || acc < work / n_units * (t + 1)))
            acc += src[b].n + src[b].nh, b++;
        x->b1 = b;
        if (n_units == 1) {
            x->count = count;
            x->sums = sums;
        } else {
            const size_t per = (weighed ? 2 : 1) * ((size_t)n_groups + 1);
            if (!ucount && !(ucount = scratch_take((size_t)n_units * per,
                                                   ROOMY((size_t)n_units * per)))) {
                PyErr_NoMemory();
                goto done;
            }
            x->count = (int64_t *)ucount->data + (size_t)t * per;
            x->sums = weighed ? x->count + n_groups + 1 : NULL;
            x->zero = 1;
        }
    }
    if (job) { /* its helpers take a lane each, as many as there are */
        pthread_mutex_lock(&job->mu);
        job->lanes = 1;
        job->max_lanes = n_lanes;
        pthread_mutex_unlock(&job->mu);
    }
    int64_t *out_len = (int64_t *)PyBytes_AS_STRING(out_lens);
    un.out_len = out_len;
    int err = 0; /* 1: bad key or dense row, 2: out of memory, 3: lens and hashes disagree */
    Py_ssize_t n_out = 0;
    Py_BEGIN_ALLOW_THREADS
    memset(out_len, 0, (size_t)n_groups * 8);
    /* pass 1: the hashes per group (and a dense input row's mark, DENSE_IN) */
    run_units(job, wk, n_units, pass1_unit);
    err = units_err(wk, n_units);
    for (int t = 0; !err && n_units > 1 && t < n_units; t++) {
        const int64_t *restrict c = wk[t].count;
        for (Py_ssize_t g = 0; g < n_groups; g++)
            count[g] = (count[g] + (c[g] & ~DENSE_IN)) | (c[g] & DENSE_IN);
        for (Py_ssize_t g = 0; sums && g < n_groups; g++) sums[g] += wk[t].sums[g];
    }
    /* light groups' partition offsets; streamed groups' slots: groups with a dense input row,
     * and the largest groups past STREAM_FACTOR * sparse_max hashes, at most max_streamed */
    int64_t cut = STREAM_FACTOR * sparse_max;
    Py_ssize_t n_cand = 0;
    for (Py_ssize_t g = 0; !err && g < n_groups; g++)
        n_cand += count[g] > cut && count[g] < DENSE_IN;
    if (!err && n_cand > max_streamed) {
        int64_t *c = malloc((size_t)n_cand * sizeof(int64_t));
        if (!c) {
            err = 2;
        } else {
            Py_ssize_t i = 0;
            for (Py_ssize_t g = 0; g < n_groups; g++)
                if (count[g] > cut && count[g] < DENSE_IN) c[i++] = count[g];
            qsort(c, (size_t)n_cand, sizeof(int64_t), cmp_desc);
            cut = c[max_streamed]; /* streamed: above the (max_streamed + 1)th largest */
            free(c);
        }
    }
    for (Py_ssize_t g = 0; !err && g < n_groups; g++) {
        if (count[g] > cut) {
            slot[g] = n_streamed++;
            start[g + 1] = start[g];
        } else {
            slot[g] = -1;
            start[g + 1] = start[g] + count[g];
        }
    }
    /* a streamed group's registers (zeroed, in one kept buffer per lane), its hashes (pass
     * 1's count: pass 2 reuses the array; -1 with a dense input row), and its set if it is read
     * again (rstart, below). reg[g + 1]: group g's registers (reg[0], the key -1: none). */
    const size_t hreg_n = (size_t)n_streamed * (N_REG / 8);
    if (!err && n_streamed &&
        (!(hcount = malloc((size_t)n_streamed * sizeof(int64_t))) ||
         !(rstart = malloc((size_t)n_streamed * sizeof(int64_t)))))
        err = 2;
    for (int t = 0; !err && t < n_lanes; t++) {
        Lane *x = &lanes[t];
        if (!(x->reg = calloc((size_t)n_groups + 1, sizeof(uint8_t *))) ||
            (n_streamed && !(x->hreg = scratch_take(hreg_n, ROOMY(hreg_n))))) {
            err = 2;
            break;
        }
        if (n_streamed) memset(x->hreg->data, 0, (size_t)n_streamed * N_REG);
        for (Py_ssize_t g = 0; g < n_groups; g++)
            if (slot[g] >= 0) x->reg[g + 1] = (uint8_t *)x->hreg->data + slot[g] * N_REG;
    }
    uint8_t **const reg = err ? NULL : lanes[0].reg; /* lane 0's: all of theirs after pass 2 */
    for (Py_ssize_t g = 0; !err && g < n_groups; g++)
        if (slot[g] >= 0) hcount[slot[g]] = count[g] < DENSE_IN ? count[g] : -1;
    /* dense input rows: their group's registers start as their maximum */
    for (Py_ssize_t b = 0; !err && b < nb; b++) {
        Src *s = &src[b];
        if (s->computed && s->k) make_keys(s, kbuf);
        for (Py_ssize_t d = 0; d < s->k; d++) {
            const int64_t g = key_at(s, s->drows[d]);
            if (g >= 0) reg_max_into(reg[g + 1], s->regs + d * N_REG);
        }
    }
    const int64_t light = start[n_groups];
    const size_t part_n = (size_t)light + SLACK * (size_t)n_groups + 2;
    if (!err && light && !(part = scratch_take(part_n, ROOMY(part_n))))
        err = 2;
    /* pass 2: streamed groups' hashes into their registers, light groups' into the partition;
     * a unit writes a light group's hashes after those of the units before it (its counts
     * become its write positions) */
    if (!err) {
        for (Py_ssize_t g = 0; g < n_groups; g++) {
            int64_t at = start[g] + SLACK * g;
            for (int t = 0; t < n_units; t++) {
                const int64_t c = wk[t].count[g] & ~DENSE_IN;
                wk[t].count[g] = at;
                at += c;
            }
        }
        un.part = part ? part->data : NULL;
        run_units(job, wk, n_units, pass2_unit);
        for (int t = 1; t < n_lanes; t++)
            for (Py_ssize_t g = 0; g < n_groups; g++)
                if (slot[g] >= 0) reg_max_into(reg[g + 1], lanes[t].reg[g + 1]);
    }
    /* A streamed group went to registers from its first hash, with no set of its hashes (in
     * their sets, the first sparse_max distinct hashes of a country x device union's 64
     * streamed groups, 373k, cost ~50 cycles each: 14% of the union). It has more than
     * sparse_max distinct hashes for certain when more registers are set; else (rare: many
     * rows of few identities) its rows are read again (rescan) into a set of its own, a table
     * of up to sparse_max + 1 hashes that stays in cache: the many rows of a few identities
     * are many hits in it, and no copy of them is made. */
    size_t tcap_max = 16;
    while (tcap_max < 2 * ((size_t)sparse_max + 1)) tcap_max *= 2;
    Sets ss = {NULL, NULL, NULL, (uint32_t)tcap_max, sparse_max};
    Py_ssize_t n_sets = 0;
    for (Py_ssize_t g = 0; !err && g < n_groups; g++) {
        if (slot[g] < 0) continue;
        rstart[slot[g]] = -1;
        if (hcount[slot[g]] < 0 || registers_set(reg[g + 1]) > sparse_max) continue;
        rstart[slot[g]] = n_sets++;
    }
    if (!err && n_sets) {
        const size_t n_tab = (size_t)n_sets * ss.tcap;
        if (!(resc = scratch_take(n_tab, ROOMY(n_tab))) ||
            !(sets_m = calloc((size_t)n_sets, sizeof(int64_t))) ||
            !(sets_zero = calloc((size_t)n_sets, 1))) {
            err = 2;
        } else {
            memset(resc->data, 0, n_tab * sizeof(uint64_t));
            ss.tab = resc->data;
            ss.m = sets_m;
            ss.zero = sets_zero;
            int64_t *at = count; /* reused again: a read-again group's set, or -1 */
            for (Py_ssize_t g = 0; g < n_groups; g++)
                at[g] = slot[g] >= 0 ? rstart[slot[g]] : -1;
            for (Py_ssize_t b = 0; b < nb; b++) {
                if (src[b].computed) make_keys(&src[b], kbuf);
                rescan_block(&src[b], at, &ss);
            }
        }
    }
    /* outputs, in kept buffers (Pooled): the hashes at most what pass 3 may write -- a group's
     * hashes up to what its path writes before it finds the group dense (the sort of up to
     * 4,096, else sparse_max + 1) -- and registers for every streamed group and every light
     * one of more than sparse_max hashes. Pass 3 runs in chunks of groups, each writing from
     * its bounds on: about as costly each by PASS3_COST, four per thread, taken one at a time
     * by whichever thread is free (a static split by hashes left one of two threads with twice
     * the other's work: a country x device union's sparse groups cost ~16 cycles a hash, its
     * dense ones ~5.4, a streamed group's copy ~2,000 in all). */
    int64_t bound = 0, dense_bound = 0, cost = 0, spent = 0;
    const int64_t light_out = sparse_max + 1 > ((int64_t)1 << BUCKET_BITS_MAX)
                                  ? sparse_max + 1 : ((int64_t)1 << BUCKET_BITS_MAX);
    n_chunks = n_lanes == 1 ? 1 : 4 * n_lanes;
    if (!err && !(ck = calloc((size_t)n_chunks, sizeof(Unit)))) err = 2;
    for (int t = 0; !err && t < n_chunks; t++) { /* chunk 0 all groups, the rest none, until */
        ck[t].g0 = t ? n_groups : 0;                /* the loop below moves the bounds */
        ck[t].g1 = n_groups;
    }
    for (Py_ssize_t g = 0; !err && g < n_groups; g++)
        cost += PASS3_COST(slot[g], start[g + 1] - start[g], sparse_max);
    for (Py_ssize_t g = 0, t = 0; !err && g < n_groups; g++) {
        while (t < n_chunks - 1 && spent >= cost / n_chunks * (t + 1)) {
            ck[t].g1 = g;
            t++;
            ck[t].g0 = g;
            ck[t].hbase = bound;
            ck[t].dbase = dense_bound;
        }
        const int64_t nh = start[g + 1] - start[g];
        spent += PASS3_COST(slot[g], nh, sparse_max);
        if (slot[g] >= 0) {
            const int64_t r = rstart[slot[g]];
            bound += r >= 0 && sets_m[r] <= sparse_max ? sets_m[r] : 0;
            dense_bound++;
        } else {
            bound += nh < light_out ? nh : light_out;
            dense_bound += nh > sparse_max;
        }
    }
    Py_BLOCK_THREADS
    if (!err && (!(out_h = pooled_new((size_t)bound * 8)) ||
                 !(out_rg = pooled_new((size_t)dense_bound * N_REG)) ||
                 (want_counts &&
                  !(out_ct = pooled_new((size_t)dense_bound * (Q_BITS + 2) * 8)))))
        err = 4;
    Py_UNBLOCK_THREADS
    if (!err) {
        un.rstart = rstart;
        un.sets_m = sets_m;
        un.sets_zero = sets_zero;
        un.ss = ss;
        un.oh = out_h->mem->data;
        un.out_r = (uint8_t *)out_rg->mem->data;
        un.out_ct = out_ct ? (int64_t *)out_ct->mem->data : NULL;
        for (int t = 0; t < n_chunks; t++) ck[t].u = &un;
        for (int t = 0; t < n_lanes; t++) {
            Dedup *w = &lanes[t].w;
            w->tcap_max = tcap_max;
            w->table = malloc(tcap_max * sizeof(uint64_t));
            w->sort_tmp = malloc(tcap_max * sizeof(uint64_t));
            w->sort_cnt = malloc((((size_t)1 << BUCKET_BITS_MAX) + 1) * sizeof(uint32_t));
            w->bits = malloc(sizeof(uint64_t) << (BITMAP_BITS - 6));
            if (!w->table || !w->sort_tmp || !w->sort_cnt || !w->bits) err = 2;
        }
    }
    if (!err) {
        run_units(job, ck, n_chunks, pass3_unit);
        err = units_err(ck, n_chunks);
    }
    /* the chunks' outputs moved together, in group order */
    for (int t = 0; !err && t < n_chunks; t++) {
        Unit *x = &ck[t];
        if (x->n_out && x->hbase != n_out)
            memmove(un.oh + n_out, un.oh + x->hbase, (size_t)x->n_out * 8);
        n_out += x->n_out;
        if (x->n_dense && x->dbase != n_dense) {
            memmove(un.out_r + (size_t)n_dense * N_REG, un.out_r + (size_t)x->dbase * N_REG,
                    (size_t)x->n_dense * N_REG);
            if (un.out_ct)
                memmove(un.out_ct + (size_t)n_dense * (Q_BITS + 2),
                        un.out_ct + (size_t)x->dbase * (Q_BITS + 2),
                        (size_t)x->n_dense * (Q_BITS + 2) * 8);
        }
        n_dense += x->n_dense;
        if (x->dg.len && buf_reserve(&out_dg, x->dg.len)) {
            err = 2;
            break;
        }
        if (x->dg.len) memcpy(out_dg.p + out_dg.len, x->dg.p, x->dg.len);
        out_dg.len += x->dg.len;
    }
    scratch_give(part);
    part = NULL;
    Py_END_ALLOW_THREADS
    if (err == 1) {
        PyErr_SetString(PyExc_ValueError, "union: a key or dense row is out of range");
        goto done;
    }
    if (err == 3) {
        PyErr_SetString(PyExc_ValueError, "union: sum(lens) != len(hashes)");
        goto done;
    }
    if (err == 2) PyErr_NoMemory();
    if (err) goto done;
    out_h->len = n_out * 8;
    out_rg->len = n_dense * N_REG;
    pooled_fit(out_h);
    pooled_fit(out_rg);
    if (out_ct) {
        out_ct->len = n_dense * (Q_BITS + 2) * 8;
        pooled_fit(out_ct);
    }
    PyObject *sums_out = sums ? PyBytes_FromStringAndSize((const char *)sums, n_groups * 8)
                              : Py_NewRef(Py_None);
    if (sums_out) {
        const char *dg = out_dg.p ? (const char *)out_dg.p : "";
        result = Py_BuildValue("(OOy#OOO)", out_lens, out_h, dg, (Py_ssize_t)out_dg.len, out_rg,
                               sums_out, out_ct ? (PyObject *)out_ct : Py_None);
        Py_DECREF(sums_out);
    }
done:
    Py_XDECREF(out_h);
    Py_XDECREF(out_rg);
    Py_XDECREF(out_ct);
    Py_XDECREF(out_lens);
    free(sums);
    free(count);
    free(start);
    free(slot);
    free(hcount);
    free(rstart);
    free(sets_m);
    free(sets_zero);
    scratch_give(resc);
    free(wk);
    scratch_give(ucount);
    for (int t = 0; lanes && t < n_lanes; t++) {
        Lane *x = &lanes[t];
        if (x->kbuf != kbuf) free(x->kbuf);
        free(x->reg);
        scratch_give(x->hreg);
        free(x->w.table);
        free(x->w.sort_tmp);
        free(x->w.sort_cnt);
        free(x->w.bits);
    }
    free(lanes);
    for (int t = 0; ck && t < n_chunks; t++) free(ck[t].dg.p);
    free(ck);
    free(kbuf);
    free(out_dg.p);
    for (Py_ssize_t b = 0; src && b < got; b++) {
        Src *s = &src[b];
        Py_buffer *bufs[] = {&s->lb, &s->hb, &s->dr, &s->rg, &s->kb, &s->wb};
        for (int j = 0; j < 6; j++)
            if (bufs[j]->obj) PyBuffer_Release(bufs[j]);
        if (s->mb.obj) PyBuffer_Release(&s->mb);
        for (int q = 0; q < s->n_parts; q++) {
            if (s->part[q].codes.obj) PyBuffer_Release(&s->part[q].codes);
            if (s->part[q].nil.obj) PyBuffer_Release(&s->part[q].nil);
        }
    }
    free(src);
    Py_DECREF(seq);
    if (job) {
        Py_BEGIN_ALLOW_THREADS
        job_close(job);
        Py_END_ALLOW_THREADS
    }
    return result;
}

/* histogram(registers, out): out[i, v] = number of registers of row i holding v, for the
 * estimator (out: k x (Q + 2) int64). */
static PyObject *histogram(PyObject *self, PyObject *args) {
    PyObject *reg_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO:histogram", &reg_obj, &out_obj)) return NULL;
    Py_buffer rg, out;
    if (get_buf(reg_obj, &rg, 0, 1, "registers") < 0) return NULL;
    if (get_buf(out_obj, &out, 1, 8, "out") < 0) {
        PyBuffer_Release(&rg);
        return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t k = rg.len / N_REG;
    if (rg.len != k * N_REG || out.len != k * (Q_BITS + 2) * 8) {
        PyErr_SetString(PyExc_ValueError, "histogram: expected k x 2^14 registers, k x 52 out");
    } else {
        const uint8_t *r = rg.buf;
        int64_t *o = out.buf;
        int bad = 0;
        Py_BEGIN_ALLOW_THREADS
        memset(o, 0, (size_t)out.len);
        for (Py_ssize_t i = 0; i < k; i++)
            bad |= reg_histogram(r + i * N_REG, o + i * (Q_BITS + 2));
        Py_END_ALLOW_THREADS
        if (bad) {
            PyErr_SetString(PyExc_ValueError, "histogram: a register above 51");
        } else {
            result = Py_None;
            Py_INCREF(result);
        }
    }
    PyBuffer_Release(&rg);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"hash_objects", hash_objects, METH_VARARGS,
     "hash_objects(seq, out_hash, out_present): XXH64 of str / int-as-decimal; None absent."},
    {"hash_int64", hash_int64, METH_VARARGS,
     "hash_int64(values, out): XXH64 of each int64's decimal text."},
    {"hash_fixed", hash_fixed, METH_VARARGS,
     "hash_fixed(data, width, out): XXH64 of fixed-width byte strings (NULs stripped)."},
    {"union", sketch_union, METH_VARARGS,
     "union(blocks, n_groups, sparse_max[, threads, job, counts]) -> (lens, hashes, "
     "dense_groups, registers, sums or None, histograms or None): sketch rows united per "
     "group."},
    {"histogram", histogram, METH_VARARGS,
     "histogram(registers, out): per row, how many registers hold each value 0..51."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sketch",
                                    "Distinct-count sketch kernels of gumshoe (uniques).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__sketch(void) {
    set_max_streamed();
    if (PyType_Ready(&PooledType) < 0 || PyType_Ready(&JobType) < 0) return NULL;
    pthread_atfork(NULL, NULL, scratch_after_fork);
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddObjectRef(m, "Job", (PyObject *)&JobType) < 0) Py_CLEAR(m);
    return m;
}
