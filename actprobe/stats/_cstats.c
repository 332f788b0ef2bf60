/* Single-pass activation statistics for CPU tensors: the C half of actprobe's CPU kernel.
 *
 * Contents: the fast pass (MOMENTS_FAST: run by run, or row by row across the columns), the second pass
 * of entries whose shift was far from their mean (RESHIFT), the masked pass for tensors with NaN/Inf
 * (MOMENTS_MASKED), the split of large tensors over torch's OpenMP team (fast_all), the Python
 * entry points, a site's lane and the hooks in C (the recording state they read: _cstate.c).
 *
 * A tensor is seen as (A, E, B), contiguous: A rows, E entries (units), B values per entry and row.
 * One call reads every value once and writes, for each entry, the number of finite values, a
 * shift (the entry's first value), and the sums of (x - shift) and (x - shift)^2, followed by
 * four scalars: min, max, the number of values with |x| > bound (non-finite ones included), and
 * the number of non-finite values. Output layout (float64): count[E] shift[E] sum[E] sumsq[E]
 * min max far nonfinite.
 *
 * moments() is the fast path: it assumes every value is finite, is compiled to vector
 * instructions (AVX2 where the processor has it), and returns False when the assumption failed;
 * the caller then runs moments_masked(), which skips non-finite values one by one. The assumption is
 * checked after the pass, not before it (a second read of the whole tensor): a NaN or an Inf among the
 * values makes the sums of squares NaN or Inf, and the hardware propagates them whatever the compiler
 * assumed. A finite value whose square overflows float32 (|x| > 1.8e19) sends the call to the masked
 * path too, which sums in float64 and counts it as finite. Values are
 * summed in float32 within blocks of at most BLOCK values and the blocks in float64; shifting by
 * one of the entry's own values keeps the squares from cancelling when the mean is far from zero.
 *
 * The file is compiled with -ffast-math for vectorised reductions (min and max included). Under it a
 * compiler may assume that no floating-point value is NaN or Inf, and clang does: it folds every
 * finiteness test of a float, even one on its bits. So finiteness is only ever tested on integers
 * loaded from memory before any float is made of them: sums_finite() reads the fast path's sums back
 * through a volatile integer pointer (no assumption about a volatile load survives), and the masked
 * path loads each value as an integer first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_cstate.h"

/* One copy of the fast path per instruction set, chosen when the library loads: AVX-512 (x86-64-v4, 30%
 * faster than AVX2 on the CPUs that have it), AVX2, and the baseline. */
#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#elif defined(__x86_64__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

#define BLOCK 256
#define MIN_RUN 64
#define MAX_COLUMNS (1 << 20)
/* Longer runs are read row by row too when there are many rows and their columns are few: the columns'
 * sums then stay in the first-level cache, and the run path's per-run reductions cost more. */
#define CACHED_COLUMNS 2048
#define CACHED_MIN_ROWS 128

/* Memory kept per thread and grown as needed (no allocation per call), cache-line aligned: the vector
 * loads and stores then never split lines. Its contents do not survive growing. NULL: no memory. */
typedef struct { void *memory; size_t bytes; } kept_memory;

static void *at_least(kept_memory *kept, size_t bytes) {
    if (bytes > kept->bytes) {
        size_t rounded = (bytes + 63) & ~(size_t)63;
        void *grown = aligned_alloc(64, rounded);
        if (!grown) return NULL;
        free(kept->memory);
        kept->memory = grown;
        kept->bytes = rounded;
    }
    return kept->memory;
}

static void give_back(kept_memory *kept) {
    free(kept->memory);
    kept->memory = NULL;
    kept->bytes = 0;
}

/* Scratch memory of the column path. */
static _Thread_local kept_memory scratch_kept = {NULL, 0};

static void *scratch(size_t bytes) { return at_least(&scratch_kept, bytes); }

/* Columns of the row-by-row path, rounded up so that each of its arrays starts on a cache line. */
static int64_t padded_columns(int64_t W) { return (W + 15) & ~(int64_t)15; }

static double quiet_nan(void) { uint64_t u = 0x7ff8000000000000ull; double d; memcpy(&d, &u, 8); return d; }

/* Whether the fast path's n float64 sums (sums of shifted values and of their squares) are all finite:
 * read as integers through a volatile pointer, so that -ffast-math's "no NaN, no Inf" cannot fold the
 * test away. A non-finite input value, or a square beyond float32's range, leaves a NaN or Inf here. */
static int sums_finite(const double *sums, int64_t n) {
    const volatile uint64_t *bits = (const volatile uint64_t *)(const volatile void *)sums;
    uint64_t hits = 0;
    for (int64_t i = 0; i < n; i++) hits |= (uint64_t)((bits[i] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    return hits == 0;
}

#define MOMENTS_FAST(NAME, T, ABS, MIN, MAX)                                                          \
VECTOR_CLONES                                                                                         \
static void NAME(const T *restrict x, const T *first, int64_t A, int64_t E, int64_t B, double bound,      \
                 double *restrict out, void *scratch_memory) {                                        \
    double *restrict count = out, *restrict shift = out + E, *restrict s1 = out + 2 * E,               \
           *restrict s2 = out + 3 * E;                                                                \
    const T tb = (T)bound;                                                                            \
    T mn = x[0], mx = x[0];                                                                           \
    double near = 0;                                                                                  \
    if (scratch_memory) { /* row by row over the W = E*B columns, BLOCK rows at a time */             \
        const int64_t W = E * B, P = padded_columns(W);                                               \
        double *restrict c1 = (double *)scratch_memory, *restrict c2 = c1 + P;                        \
        T *restrict f1 = (T *)(c2 + P), *restrict f2 = f1 + P, *restrict k = f2 + P;                   \
        for (int64_t e = 0, j = 0; e < E; e++)                                                        \
            for (int64_t b = 0; b < B; b++, j++) { k[j] = first[e * B]; c1[j] = 0; c2[j] = 0; }       \
        for (int64_t a0 = 0; a0 < A; a0 += BLOCK) {                                                   \
            int64_t a1 = a0 + BLOCK < A ? a0 + BLOCK : A;                                             \
            for (int64_t j = 0; j < W; j++) { f1[j] = 0; f2[j] = 0; }                                 \
            for (int64_t a = a0; a < a1; a++) {                                                       \
                const T *restrict row = x + a * W;                                                    \
                T lmn = row[0], lmx = row[0], lnear = 0;                                              \
                for (int64_t j = 0; j < W; j++) {                                                     \
                    T v = row[j], d = v - k[j];                                                       \
                    f1[j] += d; f2[j] += d * d;                                                       \
                    lmn = MIN(v, lmn); lmx = MAX(v, lmx);                                             \
                    lnear += ABS(v) <= tb ? (T)1 : (T)0;                                              \
                }                                                                                     \
                mn = MIN(lmn, mn); mx = MAX(lmx, mx); near += lnear;                                  \
            }                                                                                         \
            for (int64_t j = 0; j < W; j++) { c1[j] += f1[j]; c2[j] += f2[j]; }                       \
        }                                                                                             \
        /* the output is written once, at the end: its memory (a row of a ring that the caches do not hold \
         * yet, in a training step) is never read before it is written */                            \
        for (int64_t e = 0; e < E; e++) {                                                             \
            shift[e] = first[e * B]; count[e] = (double)(A * B); s1[e] = 0; s2[e] = 0;                \
        }                                                                                             \
        for (int64_t e = 0, j = 0; e < E; e++)                                                        \
            for (int64_t b = 0; b < B; b++, j++) { s1[e] += c1[j]; s2[e] += c2[j]; }                  \
    } else { /* each unit's values form runs of B: sum each run, BLOCK values at a time */            \
        for (int64_t e = 0; e < E; e++) {                                                             \
            shift[e] = first[e * B]; count[e] = (double)(A * B); s1[e] = 0; s2[e] = 0;                \
        }                                                                                             \
        for (int64_t a = 0; a < A; a++) {                                                             \
            for (int64_t e = 0; e < E; e++) {                                                         \
                const T *restrict seg = x + (a * E + e) * B;                                          \
                const T k = (T)shift[e];                                                              \
                T lmn = seg[0], lmx = seg[0];                                                         \
                double d1 = 0, d2 = 0, dn = 0;                                                        \
                for (int64_t b0 = 0; b0 < B; b0 += BLOCK) {                                           \
                    int64_t b1 = b0 + BLOCK < B ? b0 + BLOCK : B;                                     \
                    T l1 = 0, l2 = 0, lnear = 0;                                                      \
                    for (int64_t b = b0; b < b1; b++) {                                               \
                        T v = seg[b], d = v - k;                                                      \
                        l1 += d; l2 += d * d;                                                         \
                        lmn = MIN(v, lmn); lmx = MAX(v, lmx);                                         \
                        lnear += ABS(v) <= tb ? (T)1 : (T)0;                                          \
                    }                                                                                 \
                    d1 += l1; d2 += l2; dn += lnear;                                                  \
                }                                                                                     \
                s1[e] += d1; s2[e] += d2; near += dn;                                                 \
                mn = MIN(lmn, mn); mx = MAX(lmx, mx);                                                 \
            }                                                                                         \
        }                                                                                             \
    }                                                                                                 \
    out[4 * E] = mn; out[4 * E + 1] = mx;                                                             \
    out[4 * E + 2] = (double)(A * E * B) - near; out[4 * E + 3] = 0;                                  \
}

/* The shift is each entry's first value: when that value lies far from the entry's mean (a 1000-sigma
 * outlier first, or the first token of a sequence with massive activations), the float32 block sums
 * cancel badly. Such an entry (shift more than RESHIFT_SIGMAS standard deviations from its mean) is
 * summed again in float64 around its mean: a second pass over that entry only, rare in practice. */
#define RESHIFT_SIGMAS 8.0
/* Within these bounds (2^400 and 2^-400) the first look's products and the exact test's quotients stay normal
 * float64 numbers, for any count (below 2^63). */
#define RESHIFT_LARGE 0x1p400
#define RESHIFT_SMALL 0x1p-400
#define RESHIFT(NAME, T)                                                                              \
static void NAME(const T *restrict x, int64_t A, int64_t E, int64_t B, double *restrict out) {       \
    double *count = out, *shift = out + E, *s1 = out + 2 * E, *s2 = out + 3 * E;                      \
    /* First a look at every entry at once (no division, no branch: vector instructions) with a test looser   \
     * by half than the one below (m^2 > K^2 var, times count^2): an entry the exact test takes, it takes.  \
     * Sums of magnitudes where the two tests could round apart (products beyond float64, or values that the \
     * exact test's quotients make subnormal) go to the exact test too. Most calls end here. */       \
    double far = 0, large = 0, small = RESHIFT_LARGE;  /* maxima and a minimum: vector reductions */     \
    for (int64_t e = 0; e < E; e++) {                                                                 \
        const double u = s1[e], q = s2[e], a = fabs(u), spread = q * count[e] - u * u;                \
        far = fmax(far, 2 * u * u - RESHIFT_SIGMAS * RESHIFT_SIGMAS * (spread > 0 ? spread : 0));     \
        large = fmax(large, fmax(a, q));                                                              \
        small = fmin(small, fmin(a > 0 ? a : RESHIFT_LARGE, q > 0 ? q : RESHIFT_LARGE));              \
    }                                                                                                 \
    if (!(far > 0) && large < RESHIFT_LARGE && small >= RESHIFT_SMALL) return;                        \
    for (int64_t e = 0; e < E; e++) {                                                                 \
        if (count[e] <= 0) continue;                                                                  \
        double m = s1[e] / count[e], var = s2[e] / count[e] - m * m;                                  \
        if (!(m * m > RESHIFT_SIGMAS * RESHIFT_SIGMAS * (var > 0 ? var : 0))) continue;               \
        double k = shift[e] + m, t1 = 0, t2 = 0;                                                      \
        for (int64_t a = 0; a < A; a++) {                                                             \
            const T *seg = x + (a * E + e) * B;                                                       \
            for (int64_t b = 0; b < B; b++) { double d = (double)seg[b] - k; t1 += d; t2 += d * d; }  \
        }                                                                                             \
        shift[e] = k; s1[e] = t1; s2[e] = t2;                                                         \
    }                                                                                                 \
}

#define MOMENTS_MASKED(NAME, T, UT, EXP, ABS)                                                         \
static void NAME(const T *restrict x, int64_t A, int64_t E, int64_t B, double bound, double *restrict out) { \
    const UT *restrict xi = (const UT *)(const void *)x;  /* the same values, as integers */          \
    double *restrict count = out, *restrict shift = out + E, *restrict s1 = out + 2 * E,               \
           *restrict s2 = out + 3 * E;                                                                \
    double mn = 0, mx = 0, far = 0, nonfinite = 0;                                                    \
    int any = 0;                                                                                      \
    for (int64_t e = 0; e < E; e++) {                                                                 \
        count[e] = 0; s1[e] = 0; s2[e] = 0; shift[e] = 0;                                             \
        for (int64_t a = 0; a < A; a++) { /* the first finite value of the entry */                  \
            int64_t b;                                                                                \
            for (b = 0; b < B && (xi[(a * E + e) * B + b] & (EXP)) == (EXP); b++) {}                  \
            if (b < B) { shift[e] = x[(a * E + e) * B + b]; break; }                                  \
        }                                                                                             \
    }                                                                                                 \
    for (int64_t a = 0; a < A; a++)                                                                   \
        for (int64_t e = 0; e < E; e++)                                                               \
            for (int64_t b = 0; b < B; b++) {                                                         \
                UT u = xi[(a * E + e) * B + b];                                                       \
                if ((u & (EXP)) == (EXP)) { nonfinite++; far++; continue; }                           \
                T v; memcpy(&v, &u, sizeof v);                                                        \
                double d = (double)v - shift[e];                                                      \
                count[e]++; s1[e] += d; s2[e] += d * d;                                               \
                if (!any || v < mn) mn = v;                                                           \
                if (!any || v > mx) mx = v;                                                           \
                any = 1;                                                                              \
                if (!(ABS(v) <= (T)bound)) far++;                                                     \
            }                                                                                         \
    out[4 * E] = any ? mn : quiet_nan(); out[4 * E + 1] = any ? mx : quiet_nan();                     \
    out[4 * E + 2] = far; out[4 * E + 3] = nonfinite;                                                 \
}

MOMENTS_FAST(moments_f32, float, fabsf, fminf, fmaxf)
MOMENTS_FAST(moments_f64, double, fabs, fmin, fmax)
RESHIFT(reshift_f32, float)
RESHIFT(reshift_f64, double)
MOMENTS_MASKED(masked_f32, float, uint32_t, 0x7f800000u, fabsf)
MOMENTS_MASKED(masked_f64, double, uint64_t, 0x7ff0000000000000ull, fabs)

typedef struct { int is_double; unsigned long long data, out; long long A, E, B; double bound; } call_args;

/* (is_double, data_ptr, A, E, B, bound, out_ptr): data holds A*E*B values, out 4*E+4 float64. */
static int parse(PyObject *args, call_args *c) {
    if (!PyArg_ParseTuple(args, "pKLLLdK", &c->is_double, &c->data, &c->A, &c->E, &c->B, &c->bound, &c->out))
        return 0;
    if (c->A < 1 || c->E < 1 || c->B < 1) { PyErr_SetString(PyExc_ValueError, "empty tensor"); return 0; }
    return 1;
}

/* The fast pass over rows [a0, a1) of the call's tensor into out (4E+4 float64), shifted by row 0's
 * values, so that the passes over parts of the rows add up (count, sums, far) and combine (min, max).
 * Returns 0 when its scratch memory could not be had. */
static int fast_rows(const call_args *c, int64_t a0, int64_t a1, double *out) {
    /* One entry in short runs is read as one long run: (A, 1, B) as (1, 1, A*B), not row by row over B columns
     * (a Linear layer with one output makes rows of one value, where that path does no vector work). */
    const int one_run = c->E == 1 && c->B < MIN_RUN;
    const int64_t E = c->E, B = one_run ? (a1 - a0) * c->B : c->B, A = one_run ? 1 : a1 - a0, W = E * B;
    void *columns = NULL;
    /* Short runs are read row by row (vectorised across columns) when the columns fit in scratch. */
    if ((B < MIN_RUN || (W <= CACHED_COLUMNS && A >= CACHED_MIN_ROWS)) && (W <= MAX_COLUMNS || B == 1)) {
        columns = scratch((size_t)padded_columns(W) * (2 * sizeof(double) + 3 * (c->is_double ? sizeof(double) : sizeof(float))));
        if (!columns) return 0;
    }
    const int64_t first = a0 * c->E * c->B;  /* the part's first value */
    if (c->is_double) {
        const double *x = (const double *)(uintptr_t)c->data;
        moments_f64(x + first, x, A, E, B, c->bound, out, columns);
    } else {
        const float *x = (const float *)(uintptr_t)c->data;
        moments_f32(x + first, x, A, E, B, c->bound, out, columns);
    }
    return 1;
}

/* Large tensors are read by a team of the OpenMP runtime that torch runs its own CPU operations on
 * (set_team: its GOMP_parallel, omp_get_thread_num and omp_get_max_threads entry points, found by the
 * Python side in the library torch loaded). Each call takes as many threads as torch's operations
 * would now (omp_get_max_threads: what torch.set_num_threads sets). Between two torch operations that
 * team is idle (its threads spin, waiting for torch's next parallel loop), and thread t takes the t-th
 * part of the rows, as torch's own loops split an output: the part it wrote, often still in its core's
 * cache. A hook that read the whole tensor on one thread would cost a two-thread training step twice
 * its share. Parts are combined in a fixed order: the result does not depend on timing. Each call works
 * with a copy of the entry points taken under the GIL, so that set_team on another thread can never
 * pull them from under a call in flight. */
#define TEAM_MIN_VALUES (1 << 17)
#define MAX_TEAM 16
#define KEPT_TEAM_SCRATCH (4u << 20)
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
typedef struct { gomp_parallel_fn parallel; omp_int_fn thread_num; int size; } team;
static gomp_parallel_fn team_parallel = NULL;
static omp_int_fn team_thread_num = NULL, team_max_threads = NULL;
static int team_forked = 0;  /* a child made with fork(): its copy of the team's runtime may hang, never used */
static _Thread_local kept_memory part_kept = {NULL, 0};  /* a team thread's own output */

typedef struct {
    const call_args *c; omp_int_fn thread_num; int parts; double *outs[MAX_TEAM]; int ok[MAX_TEAM];
} team_job;

/* The team a call may use now (with the GIL held): size < 2 means none. */
static team current_team(void) {
    team t = {NULL, NULL, 1};
    if (team_parallel == NULL || team_forked) return t;
    t.parallel = team_parallel;
    t.thread_num = team_thread_num;
    t.size = team_max_threads();
    return t;
}


static void team_part(void *arg) {
    team_job *job = (team_job *)arg;
    int t = job->thread_num();
    if (t < 0 || t >= job->parts) return;
    const int64_t A = job->c->A, a0 = A * t / job->parts, a1 = A * (t + 1) / job->parts;
    double *out = t == 0 ? job->outs[0] : at_least(&part_kept, sizeof(double) * (size_t)(4 * job->c->E + 4));
    job->outs[t] = out;
    job->ok[t] = out != NULL && fast_rows(job->c, a0, a1, out);
    if (t > 0 && scratch_kept.bytes > KEPT_TEAM_SCRATCH) give_back(&scratch_kept);  /* torch's threads keep no large scratch */
}

/* Rows [0, A) into out: by the team when the tensor is large, else on the calling thread. */
static int fast_all(const call_args *c, double *out, team with) {
    const int64_t n = c->A * c->E * c->B;
    int parts = with.size < MAX_TEAM ? with.size : MAX_TEAM;
    if (parts > c->A) parts = (int)c->A;
    if (with.parallel == NULL || parts < 2 || n < TEAM_MIN_VALUES) return fast_rows(c, 0, c->A, out);
    team_job job = {.c = c, .thread_num = with.thread_num, .parts = parts};
    job.outs[0] = out;
    with.parallel(team_part, &job, (unsigned)parts, 0);
    int ok = 1;
    for (int t = 0; t < parts; t++) ok = ok && job.ok[t];
    if (!ok) return fast_rows(c, 0, c->A, out);  /* a part was not done (no memory, a smaller team): all here */
    const int64_t E = c->E;
    for (int t = 1; t < parts; t++) {
        const double *h = job.outs[t];
        for (int64_t e = 0; e < E; e++) { out[e] += h[e]; out[2 * E + e] += h[2 * E + e]; out[3 * E + e] += h[3 * E + e]; }
        out[4 * E] = h[4 * E] < out[4 * E] ? h[4 * E] : out[4 * E];
        out[4 * E + 1] = h[4 * E + 1] > out[4 * E + 1] ? h[4 * E + 1] : out[4 * E + 1];
        out[4 * E + 2] += h[4 * E + 2];
    }
    return 1;
}

/* set_team(parallel, thread_num, max_threads): the OpenMP runtime's GOMP_parallel, omp_get_thread_num
 * and omp_get_max_threads, as addresses; any of them 0: no team, every call on its own thread. */
static PyObject *py_set_team(PyObject *self, PyObject *args) {
    unsigned long long parallel, thread_num, max_threads;
    if (!PyArg_ParseTuple(args, "KKK", &parallel, &thread_num, &max_threads)) return NULL;
    if (parallel && thread_num && max_threads && !team_forked) {
        team_parallel = (gomp_parallel_fn)(uintptr_t)parallel;
        team_thread_num = (omp_int_fn)(uintptr_t)thread_num;
        team_max_threads = (omp_int_fn)(uintptr_t)max_threads;
    } else {
        team_parallel = NULL;
        team_thread_num = team_max_threads = NULL;
    }
    Py_RETURN_NONE;
}

/* Python's lock is released around the passes over a tensor of RELEASE_MIN_VALUES values or more only:
 * a smaller one takes a few microseconds, and releasing the lock for them handed it to any thread waiting
 * for it (the writer thread, whose HDF5 writes keep it for milliseconds) once per recorded module call,
 * the training thread then waiting to get it back. */
#define RELEASE_MIN_VALUES (1 << 16)

static int keeps_lock(const call_args *c) { return c->A * c->E * c->B < RELEASE_MIN_VALUES; }

static int fast_pass(const call_args *c, team with) {
    double *out = (double *)(uintptr_t)c->out;
    if (!fast_all(c, out, with)) return -1;
    int ok = sums_finite(out + 2 * c->E, 2 * c->E);  /* s1[E] then s2[E] */
    if (ok && c->is_double) reshift_f64((const double *)(uintptr_t)c->data, c->A, c->E, c->B, out);
    else if (ok) reshift_f32((const float *)(uintptr_t)c->data, c->A, c->E, c->B, out);
    return ok;
}

static void masked_pass(const call_args *c) {
    double *out = (double *)(uintptr_t)c->out;
    if (c->is_double) masked_f64((const double *)(uintptr_t)c->data, c->A, c->E, c->B, c->bound, out);
    else masked_f32((const float *)(uintptr_t)c->data, c->A, c->E, c->B, c->bound, out);
}

/* The fast pass: 1 if every value was finite, 0 if not (the output is then complete only after
 * run_masked), -1 when its scratch memory could not be had. */
static int run_moments(const call_args *c) {
    int ok;
    team with = current_team();
    if (keeps_lock(c)) return fast_pass(c, with);
    Py_BEGIN_ALLOW_THREADS
    ok = fast_pass(c, with);
    Py_END_ALLOW_THREADS
    return ok;
}

static void run_masked(const call_args *c) {
    if (keeps_lock(c)) {
        masked_pass(c);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    masked_pass(c);
    Py_END_ALLOW_THREADS
}

/* moments(...) -> bool: False if a value was not finite; the output is then complete only after
 * masked() with the same arguments. */
static PyObject *py_moments(PyObject *self, PyObject *args) {
    call_args c;
    if (!parse(args, &c)) return NULL;
    int ok = run_moments(&c);
    if (ok < 0) return PyErr_NoMemory();
    return PyBool_FromLong(ok);
}

static PyObject *py_masked(PyObject *self, PyObject *args) {
    call_args c;
    if (!parse(args, &c)) return NULL;
    run_masked(&c);
    Py_RETURN_NONE;
}

/* A site's lane (the Python side: engine/recorder.py, Recorder.observe): the moments of a recorded output
 * that looks like the site's last one, in one call. set_lane_types(tensor_type, partial_type) comes first.
 *
 * lane(lane, x, arena, partials) -> bool, where lane = (site, shape, strides, dtype, is_double, A, E, B,
 * bound, units, numel, cache). When x is a plain CPU tensor (type(x) is tensor_type) of that shape, strides and
 * dtype and the arena has room for 4E+4 values after arena.used, it writes x's moments there (moments,
 * then masked if a value was not finite: what moments() and masked() write for the same arguments),
 * advances arena.used, appends (site, partial_type(offset, E, units, numel, 1)) to partials and returns
 * True; that pair is kept in cache (a list of one item), and appended again, the same object, by the next call
 * that writes at the same offset. Otherwise it changes nothing and returns False: the caller takes its
 * general path. */
PyObject *lane_tensor_type = NULL;
static PyObject *lane_partial_type = NULL;
PyObject *s_is_cpu;
static PyObject *s_dtype, *s_shape, *s_stride, *s_data_ptr;

static PyObject *py_set_lane_types(PyObject *self, PyObject *args) {
    PyObject *tensor_type, *partial_type;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &tensor_type, &PyType_Type, &partial_type)) return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)partial_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "the partial type must be a tuple type");
        return NULL;
    }
    Py_INCREF(tensor_type);
    Py_INCREF(partial_type);
    Py_XSETREF(lane_tensor_type, tensor_type);
    Py_XSETREF(lane_partial_type, partial_type);
    Py_RETURN_NONE;
}

/* x.name (or x.name() with call) compared with want: 1 equal, 0 not, -1 error. */
static int same(PyObject *x, PyObject *name, int call, PyObject *want, int identity) {
    PyObject *value = call ? PyObject_CallMethodNoArgs(x, name) : PyObject_GetAttr(x, name);
    if (value == NULL) return -1;
    int r = identity ? value == want : PyObject_RichCompareBool(value, want, Py_EQ);
    Py_DECREF(value);
    return r;
}

/* The lane's work (see above): 1 done, 0 declined (nothing changed), -1 an error (set). */
static int run_lane(PyObject *lane, PyObject *x, PyObject *arena, PyObject *partials) {
    if (!PyTuple_Check(lane) || PyTuple_GET_SIZE(lane) != 12 || !PyList_Check(partials)
            || !PyObject_TypeCheck(arena, &ArenaCoreType)
            || !PyList_Check(PyTuple_GET_ITEM(lane, 11)) || PyList_GET_SIZE(PyTuple_GET_ITEM(lane, 11)) != 1) {
        PyErr_SetString(PyExc_TypeError, "lane(lane: 12-tuple, x, arena: Arena, partials: list)");
        return -1;
    }
    if (lane_tensor_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_lane_types() comes before lane()");
        return -1;
    }
    if ((PyObject *)Py_TYPE(x) != lane_tensor_type) return 0;
    int r;
    if ((r = same(x, s_is_cpu, 0, Py_True, 1)) <= 0
            || (r = same(x, s_dtype, 0, PyTuple_GET_ITEM(lane, 3), 1)) <= 0
            || (r = same(x, s_shape, 0, PyTuple_GET_ITEM(lane, 1), 0)) <= 0
            || (r = same(x, s_stride, 1, PyTuple_GET_ITEM(lane, 2), 0)) <= 0)
        return r;
    call_args c;
    long long used, size, pointer, units, numel;
    c.is_double = PyObject_IsTrue(PyTuple_GET_ITEM(lane, 4));
    c.A = PyLong_AsLongLong(PyTuple_GET_ITEM(lane, 5));
    c.E = PyLong_AsLongLong(PyTuple_GET_ITEM(lane, 6));
    c.B = PyLong_AsLongLong(PyTuple_GET_ITEM(lane, 7));
    c.bound = PyFloat_AsDouble(PyTuple_GET_ITEM(lane, 8));
    units = PyLong_AsLongLong(PyTuple_GET_ITEM(lane, 9));
    numel = PyLong_AsLongLong(PyTuple_GET_ITEM(lane, 10));
    if (PyErr_Occurred() || c.is_double < 0) return -1;
    if (c.A < 1 || c.E < 1 || c.B < 1 || c.A * c.E * c.B != numel) {
        PyErr_SetString(PyExc_ValueError, "a lane of an empty or inconsistent shape");
        return -1;
    }
    PyObject *data = PyObject_CallMethodNoArgs(x, s_data_ptr);
    if (data == NULL) return -1;
    c.data = PyLong_AsUnsignedLongLong(data);
    Py_DECREF(data);
    if (PyErr_Occurred()) return -1;
    /* from reading arena.used to advancing it, nothing here lets another thread run */
    long long *fields = ((Core *)arena)->i;
    used = fields[ARENA_USED], size = fields[ARENA_SIZE], pointer = fields[ARENA_POINTER];
    const long long width = 4 * c.E + 4;
    if (used < 0 || size < 0 || used > size || width > size - used || pointer == 0)
        return 0;  /* no room: the general path grows it */
    /* the room is taken before the kernel runs (as Arena.reserve takes it): while the kernel lets other threads
     * run, a call on another thread gets room of its own */
    fields[ARENA_USED] = used + width;
    c.out = (unsigned long long)pointer + 8ull * (unsigned long long)used;
    int ok = run_moments(&c);
    if (ok < 0) { PyErr_NoMemory(); return -1; }
    if (!ok) run_masked(&c);
    /* the pair of the lane's last call, when it wrote at the same offset: the same object again, so that a step
     * like the last one allocates nothing here and its arrangement compares equal item by item by identity */
    PyObject *cache = PyTuple_GET_ITEM(lane, 11), *last = PyList_GET_ITEM(cache, 0);
    if (PyTuple_CheckExact(last) && PyTuple_GET_SIZE(last) == 2
            && PyTuple_GET_ITEM(last, 0) == PyTuple_GET_ITEM(lane, 0)
            && Py_TYPE(PyTuple_GET_ITEM(last, 1)) == (PyTypeObject *)lane_partial_type
            && PyLong_AsLongLong(PyTuple_GET_ITEM(PyTuple_GET_ITEM(last, 1), 0)) == used)
        return PyList_Append(partials, last) < 0 ? -1 : 1;
    PyObject *partial = ((PyTypeObject *)lane_partial_type)->tp_alloc((PyTypeObject *)lane_partial_type, 5);
    if (partial == NULL) return -1;
    PyObject *items[5] = {PyLong_FromLongLong(used), PyLong_FromLongLong(c.E), PyLong_FromLongLong(units),
                          PyLong_FromLongLong(numel), PyLong_FromLong(1)};
    if (!items[0] || !items[1] || !items[2] || !items[3] || !items[4]) {
        for (int i = 0; i < 5; i++) Py_XDECREF(items[i]);
        Py_DECREF(partial);
        return -1;
    }
    for (int i = 0; i < 5; i++) PyTuple_SET_ITEM(partial, i, items[i]);
    PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(lane, 0), partial);
    Py_DECREF(partial);
    if (pair == NULL) return -1;
    PyList_SetItem(cache, 0, Py_NewRef(pair));  /* steals the new reference; cannot fail (index 0 exists) */
    r = PyList_Append(partials, pair);
    Py_DECREF(pair);
    if (r < 0) return -1;
    return 1;
}

static PyObject *py_lane(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "lane(lane: 12-tuple, x, arena, partials: list)");
        return NULL;
    }
    int r = run_lane(args[0], args[1], args[2], args[3]);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

/* A module's forward hook whose common case runs here, with no Python frame (the Python side: engine/hooks.py,
 * HookEngine). Hook(name, slow, engine, owner) is called as PyTorch calls a forward hook registered with_kwargs,
 * hook(module, args, kwargs, output). When the engine's state lets the call be recorded (engine.active, not
 * engine._capturing, and under engine._train_only the root engine._root() in training mode with gradients
 * enabled), it is the module's first call of the forward (name not in engine._calls), and the site has a lane (owner._lanes[name]) that takes the output, it
 * runs the lane into owner._arena and owner._partials (owner: a RecorderCore, whose fields these are, _cstate.c),
 * counts the call (engine._calls[name] = 1) and returns
 * None: what slow(module, args, kwargs, output) does in that case. Every other call, and any error here, goes
 * to slow, the Python hook, which does the rest as before (and reports errors as it reports any). The type is
 * marked for torch.compile as its disabled functions are: tracing never enters it; and a call made while
 * Dynamo's frame-evaluation callback is set (at a graph break of compiled code) goes to slow too, which guards
 * itself: reading the tensor may call Python (a TorchFunctionMode's __torch_function__), which the callback
 * would compile. set_grad_enabled_function(torch.is_grad_enabled) comes first, and set_frame_callback(getter)
 * (Dynamo's get_eval_frame_callback, or None where this torch has none). */
static PyObject *hook_grad_enabled = NULL, *hook_frame_callback = NULL;
static PyObject *s_active, *s_capturing, *s_train_only, *s_root, *s_training, *s_calls, *one;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *name, *slow, *engine, *owner;
} Hook;

static PyObject *py_set_frame_callback(PyObject *self, PyObject *getter) {
    if (getter != Py_None && !PyCallable_Check(getter)) {
        PyErr_SetString(PyExc_TypeError, "set_frame_callback(get_eval_frame_callback or None)");
        return NULL;
    }
    Py_XSETREF(hook_frame_callback, getter == Py_None ? NULL : Py_NewRef(getter));
    Py_RETURN_NONE;
}

static PyObject *py_set_grad_enabled_function(PyObject *self, PyObject *function) {
    if (!PyCallable_Check(function)) {
        PyErr_SetString(PyExc_TypeError, "set_grad_enabled_function(torch.is_grad_enabled)");
        return NULL;
    }
    Py_XSETREF(hook_grad_enabled, Py_NewRef(function));
    Py_RETURN_NONE;
}

/* o.name's truth: 1, 0, or -1 on an error. */
static int attribute_true(PyObject *o, PyObject *name) {
    PyObject *value = PyObject_GetAttr(o, name);
    if (value == NULL) return -1;
    int r = PyObject_IsTrue(value);
    Py_DECREF(value);
    return r;
}

/* Whether Dynamo's frame-evaluation callback is set now (a call at a graph break of compiled code): 1, 0, or -1 on
 * an error. */
static int frame_evaluating(void) {
    if (hook_frame_callback == NULL) return 0;
    PyObject *callback = PyObject_CallNoArgs(hook_frame_callback);
    if (callback == NULL) return -1;
    int set = callback != Py_None;
    Py_DECREF(callback);
    return set;
}

/* Whether a call made now may be recorded, as far as the engine's state says: 1, 0, or -1 on an error. */
static int hook_open(Hook *h) {
    if (hook_grad_enabled == NULL) return 0;
    int r = frame_evaluating();
    if (r != 0) return r < 0 ? -1 : 0;
    if ((r = attribute_true(h->engine, s_active)) <= 0) return r;
    if ((r = attribute_true(h->engine, s_capturing)) != 0) return r < 0 ? -1 : 0;
    if ((r = attribute_true(h->engine, s_train_only)) <= 0) return r < 0 ? -1 : 1;
    PyObject *ref = PyObject_GetAttr(h->engine, s_root);
    if (ref == NULL) return -1;
    PyObject *root = PyObject_CallNoArgs(ref);
    Py_DECREF(ref);
    if (root == NULL) return -1;
    r = root == Py_None ? 0 : attribute_true(root, s_training);
    Py_DECREF(root);
    if (r <= 0) return r;
    PyObject *enabled = PyObject_CallNoArgs(hook_grad_enabled);
    if (enabled == NULL) return -1;
    r = enabled == Py_True;
    Py_DECREF(enabled);
    return r;
}

/* 1: recorded here; 0: the Python hook's call; -1: an error (set). */
static int hook_fast(Hook *h, PyObject *output) {
    int r = hook_open(h);
    if (r <= 0) return r;
    PyObject *calls = PyObject_GetAttr(h->engine, s_calls), *lanes = NULL, *lane = NULL, *arena = NULL, *partials = NULL;
    r = -1;
    if (calls == NULL || !PyDict_Check(calls)) goto done;
    PyObject *count = PyDict_GetItemWithError(calls, h->name);  /* borrowed */
    if (count != NULL || PyErr_Occurred()) { r = count != NULL ? 0 : -1; goto done; }  /* a later call */
    /* the recorder's fields (a RecorderCore: Hook's owner) */
    if (!PyObject_TypeCheck(h->owner, &RecorderCoreType)) { r = 0; goto done; }
    Core *owner = (Core *)h->owner;
    lanes = Py_XNewRef(owner->o[RECORDER_LANES]);
    if (lanes == NULL || !PyDict_Check(lanes)) goto done;
    /* a strong reference: while the kernel lets other threads run, one of them may replace the site's lane */
    lane = Py_XNewRef(PyDict_GetItemWithError(lanes, h->name));
    if (lane == NULL) { r = PyErr_Occurred() ? -1 : 0; goto done; }
    if ((arena = Py_XNewRef(owner->o[RECORDER_ARENA])) == NULL
            || (partials = Py_XNewRef(owner->o[RECORDER_PARTIALS])) == NULL)
        goto done;
    /* the call is counted first, as the Python hook counts it, and uncounted when the lane declines it */
    if (PyDict_SetItem(calls, h->name, one) < 0) goto done;
    r = run_lane(lane, output, arena, partials);
    if (r <= 0) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (PyDict_DelItem(calls, h->name) < 0) PyErr_Clear();
        PyErr_Restore(type, value, traceback);
    }
done:
    if (r < 0 && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a hook engine without its call counts or lanes");
    Py_XDECREF(calls);
    Py_XDECREF(lanes);
    Py_XDECREF(lane);
    Py_XDECREF(arena);
    Py_XDECREF(partials);
    return r;
}

static PyObject *hook_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Hook *h = (Hook *)self;
    if (PyVectorcall_NARGS(nargsf) == 4 && kwnames == NULL) {
        int r = hook_fast(h, args[3]);
        if (r > 0) Py_RETURN_NONE;
        if (r < 0) PyErr_Clear();  /* the Python hook meets the same error and reports it */
    }
    return PyObject_Vectorcall(h->slow, args, nargsf, kwnames);
}

static PyObject *hook_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *name, *slow, *engine, *owner;
    static char *keywords[] = {"name", "slow", "engine", "owner", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UOOO", keywords, &name, &slow, &engine, &owner)) return NULL;
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "Hook(name, slow, engine, owner): slow must be callable");
        return NULL;
    }
    Hook *h = (Hook *)type->tp_alloc(type, 0);
    if (h == NULL) return NULL;
    h->vectorcall = hook_call;
    h->name = Py_NewRef(name);
    h->slow = Py_NewRef(slow);
    h->engine = Py_NewRef(engine);
    h->owner = Py_NewRef(owner);
    return (PyObject *)h;
}

static int hook_traverse(Hook *h, visitproc visit, void *arg) {
    Py_VISIT(h->name);
    Py_VISIT(h->slow);
    Py_VISIT(h->engine);
    Py_VISIT(h->owner);
    return 0;
}

static int hook_clear(Hook *h) {
    Py_CLEAR(h->name);
    Py_CLEAR(h->slow);
    Py_CLEAR(h->engine);
    Py_CLEAR(h->owner);
    return 0;
}

static void hook_dealloc(Hook *h) {
    PyObject_GC_UnTrack(h);
    hook_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

/* copy.copy and copy.deepcopy of a module keep its hooks as they keep a function: the same object. */
static PyObject *hook_same(PyObject *self, PyObject *unused) { return Py_NewRef(self); }

/* A pickled module (torch.save(model)) keeps a hook that does nothing in its place: engine.eager.InertHook, looked
 * up when a hook is pickled (rarely). */
static PyObject *hook_reduce(PyObject *self, PyObject *unused) {
    PyObject *eager = PyImport_ImportModule("actprobe.engine.eager");
    if (eager == NULL) return NULL;
    PyObject *inert = PyObject_GetAttrString(eager, "InertHook");
    Py_DECREF(eager);
    if (inert == NULL) return NULL;
    return Py_BuildValue("(N())", inert);
}

static PyObject *hook_get_slow(Hook *h, void *unused) { return Py_NewRef(h->slow); }
static PyObject *hook_get_name(Hook *h, void *unused) { return Py_NewRef(h->name); }

static PyMethodDef hook_methods[] = {
    {"__copy__", hook_same, METH_NOARGS, NULL},
    {"__deepcopy__", hook_same, METH_O, NULL},
    {"__reduce__", hook_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hook_getset[] = {
    {"slow", (getter)hook_get_slow, NULL, "The Python hook: every call the C side does not take.", NULL},
    {"name", (getter)hook_get_name, NULL, "The module's name.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "actprobe.stats._cstats.Hook",
    .tp_doc = "A forward hook that records a site's lane in C and hands every other call to its Python hook.",
    .tp_basicsize = sizeof(Hook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Hook, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = hook_new,
    .tp_traverse = (traverseproc)hook_traverse,
    .tp_clear = (inquiry)hook_clear,
    .tp_dealloc = (destructor)hook_dealloc,
    .tp_methods = hook_methods,
    .tp_getset = hook_getset,
};

/* Module._call_impl while a probe that records directly is open (engine/dispatch.py): a module's call made through
 * Module._wrapped_call_impl (module(x)) reaches call_impl(module, *args, **kwargs), a method of nn.Module made here
 * (make_call_impl: a method descriptor, which binds to a module as PyTorch's function does, and which Dynamo takes
 * for a C function that dispatch.py gives a traceable stand-in). make_call_impl(module_type, original, registry,
 * global_hooks, tracing_state): original is PyTorch's function; registry maps id(module) to (weakref(module), hook,
 * demote) for the modules recorded this way, which hold no hook of the probe (hook: a Hook, above); global_hooks is
 * a tuple of torch.nn.modules.module's dictionaries of global hooks; tracing_state is torch._C._get_tracing_state;
 * on_compile() is called when a module of compiled_type (torch.compile's OptimizedModule) is called, before Dynamo
 * can trace it.
 *
 * A registered module's call on a step its probe does not record (the hook's engine detached: _attached false) runs
 * as PyTorch's _call_impl would without the probe: module.forward(*args, **kwargs) when nothing wants the hook path,
 * else the original. On a recorded step, when nothing else wants PyTorch's hook path (its own hook dictionaries and
 * the global ones empty, no torch.jit trace, no Dynamo frame callback), it runs module.forward(*args, **kwargs) and
 * then the hook on its output, here: what PyTorch's _call_impl does with the hook as the module's only one, without
 * its Python frames. A registered module that has hooks of its own now is handed to demote(module) first, which
 * gives it the probe's hook back, first in its dictionary (and takes it out of the registry), and the original
 * runs them all. Any other registered call runs the original, then the hook (the global hooks run first, as
 * PyTorch runs them before a module's own); every unregistered call, the original alone. An error of forward, or
 * of the hook's Python side, propagates as it would from PyTorch's hook path. */
static PyObject *s_forward, *s_attached, *s_module_hooks[4];
static PyObject *ci_original = NULL, *ci_registry = NULL, *ci_global_hooks = NULL, *ci_tracing_state = NULL;
static PyObject *ci_compiled_type = NULL, *ci_on_compile = NULL;

/* The registry's entry of a module (a new reference), NULL without an error when it has none. */
static PyObject *registered(PyObject *module) {
    PyObject *key = PyLong_FromVoidPtr(module);
    if (key == NULL) return NULL;
    PyObject *entry = PyDict_GetItemWithError(ci_registry, key);  /* borrowed */
    Py_DECREF(key);
    if (entry == NULL || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3
            || !PyWeakref_Check(PyTuple_GET_ITEM(entry, 0))
            || PyWeakref_GetObject(PyTuple_GET_ITEM(entry, 0)) != module
            || Py_TYPE(PyTuple_GET_ITEM(entry, 1)) != &HookType)
        return NULL;  /* (a stale entry: another object had this address) */
    return Py_NewRef(entry);
}

/* 1: the call may skip PyTorch's hook path; 2: the module has hooks of its own; 0: the hook path for another
 * reason; -1: an error (set). */
static int plain_call(PyObject *module) {
    /* the module's own first: with a hook of the user's, the probe's must go before it, global hooks or not */
    for (int i = 0; i < 4; i++) {
        PyObject *hooks = PyObject_GetAttr(module, s_module_hooks[i]);
        if (hooks == NULL) return -1;
        int empty = PyDict_Check(hooks) && PyDict_GET_SIZE(hooks) == 0;
        Py_DECREF(hooks);
        if (!empty) return 2;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ci_global_hooks); i++) {
        PyObject *hooks = PyTuple_GET_ITEM(ci_global_hooks, i);
        if (!PyDict_Check(hooks) || PyDict_GET_SIZE(hooks) != 0) return 0;
    }
    int evaluating = frame_evaluating();
    if (evaluating != 0) return evaluating < 0 ? -1 : 0;
    PyObject *tracing = PyObject_CallNoArgs(ci_tracing_state);
    if (tracing == NULL) return -1;
    int none = tracing == Py_None;
    Py_DECREF(tracing);
    return none;
}

/* The hook on a call's output: in C when it takes it, else its Python side with (module, args, kwargs, output).
 * args: nargs values, the last len(kwnames) of them keyword arguments. 0, or -1 with the Python side's error set. */
static int run_hook(PyObject *hook, PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                    PyObject *output) {
    Hook *h = (Hook *)hook;
    int r = hook_fast(h, output);
    if (r > 0) return 0;
    if (r < 0) PyErr_Clear();  /* the Python side meets the same error and reports it */
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *positional = PyTuple_New(nargs - nkw), *keywords = PyDict_New(), *result = NULL;
    if (positional == NULL || keywords == NULL) goto done;
    for (Py_ssize_t i = 0; i < nargs - nkw; i++) PyTuple_SET_ITEM(positional, i, Py_NewRef(args[i]));
    for (Py_ssize_t i = 0; i < nkw; i++)
        if (PyDict_SetItem(keywords, PyTuple_GET_ITEM(kwnames, i), args[nargs - nkw + i]) < 0) goto done;
    PyObject *call[4] = {module, positional, keywords, output};
    result = PyObject_Vectorcall(h->slow, call, 4, NULL);
done:
    Py_XDECREF(positional);
    Py_XDECREF(keywords);
    if (result == NULL) return -1;
    Py_DECREF(result);
    return 0;
}

/* original(module, *args, **kwargs) */
static PyObject *call_original(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    Py_ssize_t total = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    PyObject *small[8], **all = total < 8 ? small : PyMem_Malloc((total + 1) * sizeof(PyObject *));
    if (all == NULL) return PyErr_NoMemory();
    all[0] = module;
    for (Py_ssize_t i = 0; i < total; i++) all[i + 1] = args[i];
    PyObject *out = PyObject_Vectorcall(ci_original, all, nargs + 1, kwnames);
    if (all != small) PyMem_Free(all);
    return out;
}

/* module.forward(*args, **kwargs): what PyTorch's _call_impl calls when nothing wants its hook path */
static PyObject *call_forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *forward = PyObject_GetAttr(module, s_forward);
    if (forward == NULL) return NULL;
    PyObject *output = PyObject_Vectorcall(forward, args, nargs, kwnames);
    Py_DECREF(forward);
    return output;
}

static PyObject *call_impl(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (ci_original == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "make_call_impl() comes before its method is called");
        return NULL;
    }
    PyObject *entry = registered(module);
    if (entry == NULL) {
        if (PyErr_Occurred()) return NULL;
        if (ci_compiled_type != NULL && PyObject_TypeCheck(module, (PyTypeObject *)ci_compiled_type)) {
            /* a torch.compile'd module is called: Dynamo may trace now, and must find the hooks in place */
            PyObject *done = PyObject_CallNoArgs(ci_on_compile);
            if (done == NULL) return NULL;
            Py_DECREF(done);
        }
        return call_original(module, args, nargs, kwnames);
    }
    PyObject *output = NULL, *hook = PyTuple_GET_ITEM(entry, 1);
    const int attached = attribute_true(((Hook *)hook)->engine, s_attached);
    if (attached < 0) goto done;
    int plain = plain_call(module);
    if (plain < 0) goto done;
    if (!attached) {  /* a step the probe does not record: the call as PyTorch makes it without the probe's hook */
        output = plain == 1 ? call_forward(module, args, nargs, kwnames) : call_original(module, args, nargs, kwnames);
        goto done;
    }
    if (plain == 2) {  /* the probe's hook back in the module, before its others: the original runs them all */
        PyObject *demoted = PyObject_CallOneArg(PyTuple_GET_ITEM(entry, 2), module);
        if (demoted == NULL) goto done;
        Py_DECREF(demoted);
        output = call_original(module, args, nargs, kwnames);
        goto done;
    }
    if (plain == 1) {
        output = call_forward(module, args, nargs, kwnames);
    } else {
        output = call_original(module, args, nargs, kwnames);
        if (output != NULL) {
            /* the module may have left the registry during the call (torch.compile began: its hook is in its
             * dictionary now, and ran there) */
            PyObject *still = registered(module);
            if (still == NULL && PyErr_Occurred()) Py_CLEAR(output);
            int same = still == entry;
            Py_XDECREF(still);
            if (!same) goto done;
        }
    }
    if (output == NULL) goto done;
    Py_ssize_t total = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    if (run_hook(hook, module, args, total, kwnames, output) < 0) Py_CLEAR(output);
done:
    Py_DECREF(entry);
    return output;
}

static PyMethodDef call_impl_def = {
    "_call_impl", (PyCFunction)(void (*)(void))call_impl, METH_FASTCALL | METH_KEYWORDS,
    "nn.Module._call_impl while an actprobe probe records: see actprobe/engine/dispatch.py."};

static PyObject *py_make_call_impl(PyObject *self, PyObject *args) {
    PyObject *module_type, *original, *registry, *global_hooks, *tracing_state, *compiled_type, *on_compile;
    if (!PyArg_ParseTuple(args, "O!OO!O!OO!O", &PyType_Type, &module_type, &original, &PyDict_Type, &registry,
                          &PyTuple_Type, &global_hooks, &tracing_state, &PyType_Type, &compiled_type, &on_compile))
        return NULL;
    if (!PyCallable_Check(original) || !PyCallable_Check(tracing_state) || !PyCallable_Check(on_compile)) {
        PyErr_SetString(PyExc_TypeError, "make_call_impl(module_type, original, registry, global_hooks, tracing_state, "
                                         "compiled_type, on_compile)");
        return NULL;
    }
    Py_XSETREF(ci_compiled_type, Py_NewRef(compiled_type));
    Py_XSETREF(ci_on_compile, Py_NewRef(on_compile));
    Py_XSETREF(ci_original, Py_NewRef(original));
    Py_XSETREF(ci_registry, Py_NewRef(registry));
    Py_XSETREF(ci_global_hooks, Py_NewRef(global_hooks));
    Py_XSETREF(ci_tracing_state, Py_NewRef(tracing_state));
    return PyDescr_NewMethod((PyTypeObject *)module_type, &call_impl_def);
}

static PyMethodDef methods[] = {
    {"moments", py_moments, METH_VARARGS, "Fast single-pass moments of finite values; False if any is not finite."},
    {"set_team", py_set_team, METH_VARARGS, "The OpenMP runtime large tensors are read by (0, 0, 0: none)."},
    {"masked", py_masked, METH_VARARGS, "Single-pass moments over the finite values only."},
    {"set_lane_types", py_set_lane_types, METH_VARARGS, "The tensor type and the Partial type lane() works with."},
    {"lane", (PyCFunction)(void (*)(void))py_lane, METH_FASTCALL, "A site's lane: moments of an output like its last one."},
    {"set_grad_enabled_function", py_set_grad_enabled_function, METH_O, "torch.is_grad_enabled, for the hooks."},
    {"set_frame_callback", py_set_frame_callback, METH_O, "Dynamo's get_eval_frame_callback (or None), for the hooks."},
    {"make_call_impl", py_make_call_impl, METH_VARARGS, "nn.Module._call_impl in C, while a probe records directly."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cstats", "Single-pass CPU activation statistics.", -1, methods};

static void forget_team(void) {
    team_forked = 1;
    team_parallel = NULL;
    team_thread_num = team_max_threads = NULL;
}

PyMODINIT_FUNC PyInit__cstats(void) {
    pthread_atfork(NULL, NULL, forget_team);
    s_is_cpu = PyUnicode_InternFromString("is_cpu");
    s_dtype = PyUnicode_InternFromString("dtype");
    s_shape = PyUnicode_InternFromString("shape");
    s_stride = PyUnicode_InternFromString("stride");
    s_data_ptr = PyUnicode_InternFromString("data_ptr");
    if (!s_is_cpu || !s_dtype || !s_shape || !s_stride || !s_data_ptr) return NULL;
    s_active = PyUnicode_InternFromString("active");
    s_capturing = PyUnicode_InternFromString("_capturing");
    s_train_only = PyUnicode_InternFromString("_train_only");
    s_root = PyUnicode_InternFromString("_root");
    s_training = PyUnicode_InternFromString("training");
    s_calls = PyUnicode_InternFromString("_calls");
    one = PyLong_FromLong(1);
    if (!s_active || !s_capturing || !s_train_only || !s_root || !s_training || !s_calls || !one) return NULL;
    s_forward = PyUnicode_InternFromString("forward");
    s_attached = PyUnicode_InternFromString("_attached");
    s_module_hooks[0] = PyUnicode_InternFromString("_forward_hooks");
    s_module_hooks[1] = PyUnicode_InternFromString("_forward_pre_hooks");
    s_module_hooks[2] = PyUnicode_InternFromString("_backward_hooks");
    s_module_hooks[3] = PyUnicode_InternFromString("_backward_pre_hooks");
    if (!s_forward || !s_attached || !s_module_hooks[0] || !s_module_hooks[1] || !s_module_hooks[2] || !s_module_hooks[3]) return NULL;
    if (PyType_Ready(&HookType) < 0) return NULL;
    /* torch.compile treats the hooks as its disabled functions: a graph break, never traced */
    if (PyDict_SetItemString(HookType.tp_dict, "_torchdynamo_disable", Py_True) < 0) return NULL;
    PyType_Modified(&HookType);
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Hook", (PyObject *)&HookType) < 0 || add_state_types(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
