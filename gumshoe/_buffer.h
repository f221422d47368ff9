/* Shared by gumshoe's C extensions (_kernels.c, _rows.c, _sketch.c): the element type of a
 * buffer, and the AVX2 clones of hot loops.
 *
 * The order of the integer types matters: _rows.c indexes its range tables by T_I8..T_I64.
 */
#ifndef GUMSHOE_BUFFER_H
#define GUMSHOE_BUFFER_H

#include <Python.h>

/* Hot helpers are forced inline so each caller compiled for a wider target (the AVX2 clones in
 * _kernels.c) gets its own vectorised copy rather than a call into the baseline one. */
#if defined(__GNUC__)
#define HOT_INLINE static inline __attribute__((always_inline))
#define NO_INLINE static __attribute__((noinline))
#else
#define HOT_INLINE static inline
#define NO_INLINE static
#endif

/* A function compiled twice where the loader can pick one at load time (GCC/Clang on x86-64
 * Linux with glibc, via ifunc): for AVX2 and for the baseline, so one build runs on any
 * x86-64 and uses AVX2 where it is there. Elsewhere, once. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef CLONES
#define CLONES
#endif

/* The same for x86-64-v3 (AVX2 with BMI1/2, LZCNT, MOVBE): the sketch union's per-hash loops,
 * whose register rank is one lzcnt there (bsr, xor and add in the baseline) and whose shifts
 * take no flags (shlx/shrx): a country x device union 57.2 -> 54.3 ms. GCC 12 names the level
 * in target_clones; elsewhere, the AVX2 clones (CLONES). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__)
#define CLONES_V3 __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES_V3 CLONES
#endif

enum { T_I8, T_U8, T_I16, T_U16, T_I32, T_U32, T_I64, T_U64, T_F32, T_F64, T_BOOL, T_STR, T_TS,
       T_BAD };

static inline int is_int_type(int t) { return t <= T_U64 || t == T_BOOL; }
static inline int is_signed_type(int t) {
    return t == T_I8 || t == T_I16 || t == T_I32 || t == T_I64;
}

/* The case labels of a switch over the integer element types, one dispatch table for every
 * kernel: LOOP(CTYPE, WIDE, UTYPE) with the element type, the 64-bit type its values widen to
 * (sign-extending when signed) and the unsigned type of its width. bool reads as uint8. */
#define INT_TYPE_CASES(LOOP)                                                               \
    case T_I8: LOOP(int8_t, int64_t, uint8_t); break;                                      \
    case T_U8: case T_BOOL: LOOP(uint8_t, uint64_t, uint8_t); break;                       \
    case T_I16: LOOP(int16_t, int64_t, uint16_t); break;                                   \
    case T_U16: LOOP(uint16_t, uint64_t, uint16_t); break;                                 \
    case T_I32: LOOP(int32_t, int64_t, uint32_t); break;                                   \
    case T_U32: LOOP(uint32_t, uint64_t, uint32_t); break;                                 \
    case T_I64: LOOP(int64_t, int64_t, uint64_t); break;                                   \
    case T_U64: LOOP(uint64_t, uint64_t, uint64_t); break;

/* The element type of a buffer from its struct-module format (native byte order only). */
static inline int type_of(const Py_buffer *b) {
    const char *f = b->format ? b->format : "B";
    if (*f == '@' || *f == '=' || *f == '<') f++;
    if (f[0] == '\0' || f[1] != '\0') return T_BAD;
    switch (f[0]) {
    case '?': return b->itemsize == 1 ? T_BOOL : T_BAD;
    case 'd': return b->itemsize == 8 ? T_F64 : T_BAD;
    case 'f': return b->itemsize == 4 ? T_F32 : T_BAD;
    case 'b': case 'h': case 'i': case 'l': case 'q':
        switch (b->itemsize) { case 1: return T_I8; case 2: return T_I16; case 4: return T_I32;
                               case 8: return T_I64; }
        return T_BAD;
    case 'B': case 'H': case 'I': case 'L': case 'Q':
        switch (b->itemsize) { case 1: return T_U8; case 2: return T_U16; case 4: return T_U32;
                               case 8: return T_U64; }
        return T_BAD;
    }
    return T_BAD;
}

#endif
