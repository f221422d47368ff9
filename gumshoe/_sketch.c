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
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
static inline void reg_add(uint8_t *reg, uint64_t h) {
    const uint32_t idx = (uint32_t)(h >> Q_BITS);
    const uint64_t w = h << P_BITS;
    const uint8_t rank = w ? (uint8_t)(__builtin_clzll(w) + 1) : (uint8_t)(Q_BITS + 1);
    if (reg[idx] < rank) reg[idx] = rank;
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

static Py_ssize_t bsearch64(const int64_t *a, Py_ssize_t n, int64_t v) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (a[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == v ? lo : -1;
}

/* union(lens, offsets, hashes, dense_rows, registers, rows, groups, n_groups, sparse_max)
 *   -> (lens, hashes, dense_groups, registers) as bytes (int64, uint64, int64, uint8).
 *
 * Rows r = rows[i] (or i when rows is None) of a sketch column -- lens: unsigned, 1/2/4/8
 * bytes; offsets: n+1 int64 into the hashes, needed only with rows; dense_rows: sorted int64
 * with their registers, k x 2^14 uint8 -- united per group groups[i] in [0, n_groups). The
 * hashes are first partitioned by group (a counting sort, skipped when the selected rows are
 * consecutive and in group order), then each group's are deduplicated in one reused
 * open-addressing table (sized to the group, so it stays in cache) and sorted, or folded into
 * registers once the group has more than sparse_max distinct hashes or a dense input row. */
typedef struct {
    int64_t group, dense;
} DenseIn;

static int cmp_dense(const void *a, const void *b) {
    const DenseIn *x = a, *y = b;
    return x->group < y->group ? -1 : x->group > y->group ? 1 : 0;
}

static inline int64_t len_at(const void *p, int w, Py_ssize_t i) {
    switch (w) {
    case 1: return ((const uint8_t *)p)[i];
    case 2: return ((const uint16_t *)p)[i];
    case 4: return ((const uint32_t *)p)[i];
    default: return (int64_t)((const uint64_t *)p)[i];
    }
}

/* The partition buffer of the last call, kept for the next (a fresh one costs a page fault
 * per 4 KiB, as much as the partition itself); taken and given back atomically, so calls on
 * several threads never share it. Only buffers up to SCRATCH_KEEP bytes are kept. */
typedef struct {
    size_t n;
    uint64_t data[];
} Scratch;
static Scratch *cached_scratch = NULL;
#define SCRATCH_KEEP ((size_t)256 << 20)

static Scratch *scratch_take(size_t n) {
    Scratch *s = __atomic_exchange_n(&cached_scratch, NULL, __ATOMIC_ACQ_REL);
    if (s && s->n >= n) return s;
    free(s);
    s = malloc(sizeof(Scratch) + (n ? n : 1) * sizeof(uint64_t));
    if (s) s->n = n;
    return s;
}

static void scratch_give(Scratch *s) {
    if (s && s->n * sizeof(uint64_t) > SCRATCH_KEEP) {
        free(s);
        return;
    }
    free(__atomic_exchange_n(&cached_scratch, s, __ATOMIC_ACQ_REL));
}

#define SLACK 2
#define SEL_ROW(i) (have_rows ? rows[i] : (int64_t)(i))

static PyObject *sketch_union(PyObject *self, PyObject *args) {
    PyObject *len_obj, *off_obj, *h_obj, *dr_obj, *reg_obj, *rows_obj, *g_obj;
    Py_ssize_t n_groups, sparse_max;
    if (!PyArg_ParseTuple(args, "OOOOOOOnn:union", &len_obj, &off_obj, &h_obj, &dr_obj,
                          &reg_obj, &rows_obj, &g_obj, &n_groups, &sparse_max))
        return NULL;
    Py_buffer lb = {0}, off = {0}, hb = {0}, dr = {0}, rg = {0}, rw = {0}, gb = {0};
    const int have_rows = rows_obj != Py_None;
    PyObject *result = NULL, *out_hashes = NULL, *out_lens = NULL;
    int64_t *count = NULL, *start = NULL;
    uint64_t *table = NULL;
    Scratch *part = NULL;
    DenseIn *din = NULL;
    Buf out_r = {0}, out_dg = {0};
    if (get_buf(len_obj, &lb, 0, 0, "lens") < 0) goto done;
    if (have_rows && get_buf(off_obj, &off, 0, 8, "offsets") < 0) goto done;
    if (get_buf(h_obj, &hb, 0, 8, "hashes") < 0) goto done;
    if (get_buf(dr_obj, &dr, 0, 8, "dense_rows") < 0) goto done;
    if (get_buf(reg_obj, &rg, 0, 1, "registers") < 0) goto done;
    if (have_rows && get_buf(rows_obj, &rw, 0, 8, "rows") < 0) goto done;
    if (get_buf(g_obj, &gb, 0, 8, "groups") < 0) goto done;

    const int lw = (int)lb.itemsize;
    const void *lens = lb.buf;
    const int64_t *offs = off.buf, *drows = dr.buf, *rows = rw.buf, *groups = gb.buf;
    const uint64_t *hashes = hb.buf;
    const uint8_t *regs = rg.buf;
    const Py_ssize_t n_rows = lw ? lb.len / lw : 0, k = dr.len / 8, n_sel = gb.len / 8;
    const Py_ssize_t n_hashes = hb.len / 8;
    if ((lw != 1 && lw != 2 && lw != 4 && lw != 8) || rg.len != k * N_REG ||
        (have_rows && (rw.len != gb.len || off.len != (n_rows + 1) * 8 ||
                       offs[n_rows] != n_hashes)) ||
        (!have_rows && n_sel != n_rows) || n_groups < 0 || sparse_max < 0) {
        PyErr_SetString(PyExc_ValueError, "union: inconsistent sketch column or selection");
        goto done;
    }
    count = calloc((size_t)n_groups + 1, sizeof(int64_t));
    start = calloc((size_t)n_groups + 2, sizeof(int64_t));
    if (!count || !start) {
        PyErr_NoMemory();
        goto done;
    }
    int err = 0; /* 1: bad group or row, 2: out of memory, 3: lens and hashes disagree */
    Py_ssize_t n_din = 0, cap_din = 0;
    int in_order = 1;
    int64_t base = 0;
    Py_BEGIN_ALLOW_THREADS
    /* pass 1: hashes per group; dense input rows; are the rows consecutive, in group order? */
    int64_t prev_g = 0, prev_r = -1, run = 0;
    for (Py_ssize_t i = 0; i < n_sel; i++) {
        const int64_t r = SEL_ROW(i), g = groups[i];
        if (r < 0 || r >= n_rows || g < 0 || g >= n_groups) {
            err = 1;
            break;
        }
        if (g < prev_g || (have_rows && i && r != prev_r + 1)) in_order = 0;
        prev_g = g;
        prev_r = r;
        const int64_t len = len_at(lens, lw, r);
        run += len;
        count[g] += len;
        if (len == 0 && k) {
            const Py_ssize_t d = bsearch64(drows, k, r);
            if (d >= 0) {
                if (n_din == cap_din) {
                    cap_din = cap_din ? 2 * cap_din : 64;
                    DenseIn *p = realloc(din, (size_t)cap_din * sizeof(DenseIn));
                    if (!p) {
                        err = 2;
                        break;
                    }
                    din = p;
                }
                din[n_din].group = g;
                din[n_din++].dense = d;
            }
        }
    }
    if (!err && !have_rows && run != n_hashes) err = 3;
    if (!err) {
        for (Py_ssize_t g = 0; g < n_groups; g++) start[g + 1] = start[g] + count[g];
        if (n_din > 1) qsort(din, (size_t)n_din, sizeof(DenseIn), cmp_dense);
        if (in_order && n_sel && have_rows) base = offs[rows[0]];
    }
    Py_END_ALLOW_THREADS
    if (err == 1) {
        PyErr_SetString(PyExc_ValueError, "union: a row or group index is out of range");
        goto done;
    }
    if (err == 3) {
        PyErr_SetString(PyExc_ValueError, "union: sum(lens) != len(hashes)");
        goto done;
    }
    if (err == 2) {
        PyErr_NoMemory();
        goto done;
    }
    /* outputs: the hashes at most all of the input's (pages never written cost nothing and
     * are given back by the final resize), the lengths one per group */
    const Py_ssize_t total = (Py_ssize_t)start[n_groups];
    out_hashes = PyBytes_FromStringAndSize(NULL, total * 8);
    out_lens = PyBytes_FromStringAndSize(NULL, n_groups * 8);
    if (!out_hashes || !out_lens) goto done;
    uint64_t *oh = (uint64_t *)PyBytes_AS_STRING(out_hashes);
    int64_t *out_len = (int64_t *)PyBytes_AS_STRING(out_lens);
    memset(out_len, 0, (size_t)n_groups * 8);
    Py_ssize_t n_out = 0;
    Py_BEGIN_ALLOW_THREADS
    /* pass 2: the hashes partitioned by group (when in order, each group's hashes are one
     * contiguous run of the input already) */
    const uint64_t *src = hashes + base;
    int64_t slack = 0;
    if (!in_order) {
        /* each group's region has SLACK spare slots after it: a row of one or two hashes
         * is copied as two (no branch on its length; the extra one lands on the group's
         * next position or its spare slot) */
        part = scratch_take((size_t)total + SLACK * (size_t)n_groups + 2);
        if (!part) {
            err = 2;
        } else {
            int64_t *pos = count; /* reused: the write position of each group */
            for (Py_ssize_t g = 0; g < n_groups; g++) pos[g] = start[g] + SLACK * g;
            uint64_t *dst0 = part->data;
            if (have_rows) {
                for (Py_ssize_t i = 0; i < n_sel; i++) {
                    const int64_t r = rows[i], a = offs[r], len = offs[r + 1] - a;
                    uint64_t *dst = dst0 + pos[groups[i]];
                    for (int64_t j = 0; j < len; j++) dst[j] = hashes[a + j];
                    pos[groups[i]] += len;
                }
            } else {
#define PARTITION(LT)                                                                      \
    do {                                                                                   \
        const LT *ln = (const LT *)lens;                                                   \
        int64_t a = 0;                                                                     \
        const int64_t safe_end = n_hashes - 2;                                             \
        for (Py_ssize_t i = 0; i < n_sel; i++) {                                           \
            const int64_t len = (int64_t)ln[i], g = groups[i];                             \
            uint64_t *dst = dst0 + pos[g];                                                 \
            if (len <= 2 && a <= safe_end) {                                               \
                dst[0] = hashes[a];                                                        \
                dst[1] = hashes[a + 1];                                                    \
            } else {                                                                       \
                for (int64_t j = 0; j < len; j++) dst[j] = hashes[a + j];                   \
            }                                                                              \
            pos[g] += len;                                                                 \
            a += len;                                                                      \
        }                                                                                  \
    } while (0)
                switch (lw) {
                case 1: PARTITION(uint8_t); break;
                case 2: PARTITION(uint16_t); break;
                case 4: PARTITION(uint32_t); break;
                default: PARTITION(uint64_t); break;
                }
#undef PARTITION
            }
            src = part->data;
            slack = SLACK;
        }
    }
    /* pass 3: per group, deduplicate (one reused table sized to the group), sort or fold */
    size_t tcap_max = 16;
    while (tcap_max < 2 * ((size_t)sparse_max + 1)) tcap_max *= 2;
    uint64_t *sort_tmp = NULL;
    uint32_t *sort_cnt = NULL;
    if (!err) {
        table = malloc(tcap_max * sizeof(uint64_t));
        sort_tmp = malloc(tcap_max * sizeof(uint64_t));
        sort_cnt = malloc((((size_t)1 << BUCKET_BITS_MAX) + 1) * sizeof(uint32_t));
        if (!table || !sort_tmp || !sort_cnt) err = 2;
    }
    Py_ssize_t di = 0;
    for (Py_ssize_t g = 0; !err && g < n_groups; g++) {
        const uint64_t *h = src + start[g] + slack * g;
        const int64_t nh = start[g + 1] - start[g];
        const int has_dense = di < n_din && din[di].group == g;
        if (nh == 0 && !has_dense) continue;
        uint8_t *reg = NULL;
        if (has_dense) {
            if (buf_reserve(&out_r, N_REG) || buf_reserve(&out_dg, 8)) {
                err = 2;
                break;
            }
            reg = out_r.p + out_r.len;
            memcpy(reg, regs + din[di].dense * N_REG, N_REG);
            for (di++; di < n_din && din[di].group == g; di++) {
                const uint8_t *o = regs + din[di].dense * N_REG;
                for (int j = 0; j < N_REG; j++) reg[j] = reg[j] > o[j] ? reg[j] : o[j];
            }
            for (int64_t j = 0; j < nh; j++) reg_add(reg, h[j]);
        } else if (nh == 1) {
            oh[n_out++] = h[0];
            out_len[g] = 1;
        } else {
            size_t tcap = 16;
            while (tcap < tcap_max && tcap < 2 * (size_t)nh) tcap *= 2;
            const uint64_t mask = tcap - 1;
            memset(table, 0, tcap * sizeof(uint64_t));
            /* each new hash goes to the table (0 marks an empty slot; the hash 0 is only
             * noted) and straight to the output, which is then sorted in place */
            uint64_t *o = oh + n_out;
            Py_ssize_t m = 0;
            int has_zero = 0;
            int64_t j = 0;
            for (; j < nh && m <= sparse_max; j++) {
                const uint64_t v = h[j];
                if (v == 0) {
                    if (!has_zero) o[m++] = 0;
                    has_zero = 1;
                    continue;
                }
                uint64_t s = (v ^ (v >> 29)) & mask;
                while (table[s] && table[s] != v) s = (s + 1) & mask;
                if (!table[s]) {
                    table[s] = v;
                    o[m++] = v;
                }
            }
            if (m > sparse_max) { /* too many: registers */
                if (buf_reserve(&out_r, N_REG) || buf_reserve(&out_dg, 8)) {
                    err = 2;
                    break;
                }
                reg = out_r.p + out_r.len;
                memset(reg, 0, N_REG);
                for (Py_ssize_t t = 0; t < m; t++) reg_add(reg, o[t]);
                for (; j < nh; j++) reg_add(reg, h[j]);
            } else {
                sort_hashes(o, m, sort_tmp, sort_cnt);
                n_out += m;
                out_len[g] = m;
            }
        }
        if (reg) {
            out_r.len += N_REG;
            memcpy(out_dg.p + out_dg.len, &g, 8);
            out_dg.len += 8;
        }
    }
    scratch_give(part);
    part = NULL;
    free(sort_tmp);
    free(sort_cnt);
    Py_END_ALLOW_THREADS
    if (err == 2) {
        PyErr_NoMemory();
        goto done;
    }
    if (_PyBytes_Resize(&out_hashes, n_out * 8) < 0) goto done;
    result = Py_BuildValue("(OOy#y#)", out_lens, out_hashes,
                           (const char *)(out_dg.p ? out_dg.p : (uint8_t *)""),
                           (Py_ssize_t)out_dg.len,
                           (const char *)(out_r.p ? out_r.p : (uint8_t *)""),
                           (Py_ssize_t)out_r.len);
done:
    Py_XDECREF(out_hashes);
    Py_XDECREF(out_lens);
    free(count);
    free(start);
    free(table);
    free(din);
    free(out_r.p);
    free(out_dg.p);
    if (lb.obj) PyBuffer_Release(&lb);
    if (off.obj) PyBuffer_Release(&off);
    if (hb.obj) PyBuffer_Release(&hb);
    if (dr.obj) PyBuffer_Release(&dr);
    if (rg.obj) PyBuffer_Release(&rg);
    if (rw.obj) PyBuffer_Release(&rw);
    if (gb.obj) PyBuffer_Release(&gb);
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
        for (Py_ssize_t i = 0; i < k; i++) {
            int64_t c[256] = {0};
            for (Py_ssize_t j = 0; j < N_REG; j++) c[r[i * N_REG + j]]++;
            for (int v = 0; v < 256; v++) {
                if (v < Q_BITS + 2) o[i * (Q_BITS + 2) + v] = c[v];
                else if (c[v]) bad = 1;
            }
        }
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
     "union(lens, offsets, hashes, dense_rows, registers, rows, groups, n_groups, "
     "sparse_max)."},
    {"histogram", histogram, METH_VARARGS,
     "histogram(registers, out): per row, how many registers hold each value 0..51."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sketch",
                                    "Distinct-count sketch kernels of gumshoe (uniques).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__sketch(void) { return PyModule_Create(&module); }
