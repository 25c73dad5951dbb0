/* Sparse x dense products for the encoder engine: y = act(x @ W.T + b), W (out, in) in CSR form.
 *
 * Why this layout: tokens are processed in strips (32 with AVX2, 64 with AVX-512). A strip of x is first
 * transposed into [feature][strip's tokens], so the non-zero (o, k) of W is one broadcast of its value and
 * four fused multiply-adds on the strip's tokens of feature k, loaded contiguously. A row's sums stay in
 * registers (two sets of four, alternating between non-zeros, so eight independent FMA chains hide the
 * FMA latency) while the row's non-zeros stream; nothing but x is loaded per non-zero.
 *
 * Values come as fp32, or as int8 with one fp32 scale per row (the scale is applied once, to the
 * row's sums). Column indices are uint16 (in_features <= 65536).
 *
 * Threads: OpenMP. Loaded after torch, this library shares torch's libgomp (same soname), so torch's
 * operators and these kernels run on one thread pool and obey torch.set_num_threads.
 *
 * Built by the package's install (setup.py). The AVX2 and AVX-512 code is compiled with target attributes;
 * the caller chooses the width with sb_use_isa(), which never allows more than the processor has.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>

/* Tokens per strip: 32 with AVX2, 64 with AVX-512 (four registers either way), so that a row's fixed cost
 * (its loop, its epilogue) is shared by as many tokens as the registers hold. */
#define STRIP_AVX2 32
#define STRIP_AVX512 64
static int strip_tokens = STRIP_AVX2;
#define ROW_BLOCK 64 /* output rows per task: enough tasks for every thread even at one strip */

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define AVX512_BF16 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16")))
/* Whether this compiler knows vdpbf16ps (GCC 10, clang 9): an older one builds the rest, and attention in
 * bfloat16 then runs on fp32 products everywhere. */
#if (defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10)
#define HAVE_AVX512_BF16 1
#else
#define HAVE_AVX512_BF16 0
#endif

/* The widest instruction set both the processor and the caller allow: 2 AVX-512 (F, BW, VL, DQ) with VNNI,
 * 1 AVX2 with FMA, 0 neither (the caller then uses its fall-back). Every width computes the same sums in
 * the same order, lane for lane, so the answers do not depend on which one runs (attention in bfloat16 alone
 * sums in pairs where AVX-512 BF16 runs it: see its definition). */
enum { ISA_NONE, ISA_AVX2, ISA_AVX512 };
static int isa = ISA_AVX2;
/* Whether attention in bfloat16 runs on the processor's own dot products (AVX-512 BF16) rather than on fp32
 * products of the same rounded values. */
static int bf16_dot = 0;

int sb_cpu_isa(void) {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return ISA_NONE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
        return ISA_AVX512;
    return ISA_AVX2;
}

/* Chooses the instruction set (at most the processor's); returns the one in use. */
int sb_use_isa(int wanted) {
    const int best = sb_cpu_isa();
    isa = wanted < best ? wanted : best;
    strip_tokens = isa == ISA_AVX512 ? STRIP_AVX512 : STRIP_AVX2;
#if HAVE_AVX512_BF16
    bf16_dot = isa == ISA_AVX512 && __builtin_cpu_supports("avx512bf16");
#endif
    return isa;
}

int sb_max_threads(void) { return omp_get_max_threads(); }

/* Whether attention in bfloat16 runs on vdpbf16ps (for head sizes that are a multiple of 32). */
int sb_bf16_dot(void) { return bf16_dot; }

/* exp(x) for x <= 0 (Cephes' single-precision polynomial, relative error ~1e-7) and GELU with erf (BERT's
 * "gelu": 0.5 x (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7),
 * and x rounded to bfloat16 by Veltkamp's split (g = x (2^16 + 1), x_hi = g - (g - x)): three operations where the
 * bits take five, the same value as vcvtneps2bf16 for normal x below 2^111, ties included (a test checks it bit
 * for bit); -0 gives +0, infinities NaN, subnormals 8 significant bits (none matters in attention); g is an
 * explicit FMA so that the compiler cannot contract g - x into one. Written once for both widths: V the vector
 * type, VI its integer type, P the intrinsics' prefix, B the bits. Each width runs the same operations lane for
 * lane, so both give the same values. */
#define DEFINE_VECTOR_MATH(TARGET, V, VI, P, B, SUFFIX)                                                            \
TARGET static inline V exp_neg##SUFFIX(V x) {                                                                      \
    x = P##_max_ps(x, P##_set1_ps(-87.0f));                                                                        \
    V fx = P##_floor_ps(P##_fmadd_ps(x, P##_set1_ps(1.44269504088896341f), P##_set1_ps(0.5f)));                    \
    x = P##_fnmadd_ps(fx, P##_set1_ps(0.693359375f), x);                                                           \
    x = P##_fnmadd_ps(fx, P##_set1_ps(-2.12194440e-4f), x);                                                        \
    V y = P##_set1_ps(1.9875691500e-4f);                                                                           \
    y = P##_fmadd_ps(y, x, P##_set1_ps(1.3981999507e-3f));                                                         \
    y = P##_fmadd_ps(y, x, P##_set1_ps(8.3334519073e-3f));                                                         \
    y = P##_fmadd_ps(y, x, P##_set1_ps(4.1665795894e-2f));                                                         \
    y = P##_fmadd_ps(y, x, P##_set1_ps(1.6666665459e-1f));                                                         \
    y = P##_fmadd_ps(y, x, P##_set1_ps(5.0000001201e-1f));                                                         \
    y = P##_fmadd_ps(y, P##_mul_ps(x, x), P##_add_ps(x, P##_set1_ps(1.0f)));                                       \
    VI n = P##_slli_epi32(P##_add_epi32(P##_cvtps_epi32(fx), P##_set1_epi32(127)), 23);                            \
    return P##_mul_ps(y, P##_castsi##B##_ps(n));                                                                   \
}                                                                                                                  \
TARGET static inline V gelu##SUFFIX(V x) {                                                                         \
    const V sign_mask = P##_set1_ps(-0.0f);                                                                        \
    V z = P##_mul_ps(x, P##_set1_ps(0.70710678118654752f));                                                        \
    V az = P##_andnot_ps(sign_mask, z);                                                                            \
    V t = P##_div_ps(P##_set1_ps(1.0f), P##_fmadd_ps(P##_set1_ps(0.3275911f), az, P##_set1_ps(1.0f)));             \
    V p = P##_set1_ps(1.061405429f);                                                                               \
    p = P##_fmadd_ps(p, t, P##_set1_ps(-1.453152027f));                                                            \
    p = P##_fmadd_ps(p, t, P##_set1_ps(1.421413741f));                                                             \
    p = P##_fmadd_ps(p, t, P##_set1_ps(-0.284496736f));                                                            \
    p = P##_fmadd_ps(p, t, P##_set1_ps(0.254829592f));                                                             \
    p = P##_mul_ps(p, t);                                                                                          \
    V erf_abs = P##_fnmadd_ps(p, exp_neg##SUFFIX(P##_mul_ps(P##_sub_ps(P##_setzero_ps(), az), az)),                \
                              P##_set1_ps(1.0f));                                                                  \
    V erf = P##_or_ps(erf_abs, P##_and_ps(z, sign_mask));                                                          \
    return P##_mul_ps(P##_mul_ps(P##_set1_ps(0.5f), x), P##_add_ps(P##_set1_ps(1.0f), erf));                       \
}                                                                                                                  \
TARGET static inline V round_bf16##SUFFIX(V x) {                                                                   \
    const V g = P##_fmadd_ps(x, P##_set1_ps(65537.0f), P##_setzero_ps());                                          \
    return P##_sub_ps(g, P##_sub_ps(g, x));                                                                        \
}
DEFINE_VECTOR_MATH(AVX2, __m256, __m256i, _mm256, 256, )
DEFINE_VECTOR_MATH(AVX512, __m512, __m512i, _mm512, 512, 512)

/* An 8 x 8 block of floats transposed in registers: r[i] holds row i on entry and column i on return. */
AVX2 static inline void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

/* x rows [start, start + width) (token-major, row stride ldx) -> xs[in][stride], zero-padded; 8 tokens x 8
 * features at a time, transposed in registers (read element by element, the strided loads cost more than
 * the products of a sparse layer). */
AVX2 static void pack_strip(const float *x, int ldx, int start, int width, int in_f, int stride, float *xs) {
    const int k8 = in_f & ~7;
    for (int i0 = 0; i0 < stride; i0 += 8) {
        const float *rows[8];
        for (int r = 0; r < 8; r++) rows[r] = i0 + r < width ? x + (size_t)(start + i0 + r) * ldx : NULL;
        for (int k = 0; k < k8; k += 8) {
            __m256 v[8];
            for (int r = 0; r < 8; r++) v[r] = rows[r] ? _mm256_loadu_ps(rows[r] + k) : _mm256_setzero_ps();
            transpose8(v);
            for (int c = 0; c < 8; c++) _mm256_store_ps(xs + (size_t)(k + c) * stride + i0, v[c]);
        }
        for (int k = k8; k < in_f; k++)
            for (int r = 0; r < 8; r++) xs[(size_t)k * stride + i0 + r] = rows[r] ? rows[r][k] : 0.0f;
    }
}

/* A row kernel runs on `regs` registers of tokens (1, 2 or 4: as many as the strip's real tokens fill), so a
 * short strip (a short sentence, a batch's last strip) costs its tokens rather than a whole strip's. Each
 * kernel is written once for a constant `regs` and expanded three times (BY_REGS), so its sums stay in
 * registers. Tokens past the registers in use are left unwritten: nothing reads them. */
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define BY_REGS(regs, KERNEL, ...) \
    ((regs) == 1 ? KERNEL(1, __VA_ARGS__) : (regs) == 2 ? KERNEL(2, __VA_ARGS__) : KERNEL(4, __VA_ARGS__))

/* ys[o] = act(scale * (a + c) + b) for one row of a strip: its two sets of partial sums, regs x 8 tokens. */
AVX2 ALWAYS_INLINE void finish_row(const int regs, const __m256 a[4], const __m256 c[4], float scale, float bias,
                                   int act, float *y) {
    const __m256 s = _mm256_set1_ps(scale), b = _mm256_set1_ps(bias);
    for (int r = 0; r < regs; r++) {
        __m256 v = _mm256_fmadd_ps(_mm256_add_ps(a[r], c[r]), s, b);
        _mm256_store_ps(y + 8 * r, act == 1 ? gelu(v) : v);
    }
}

/* The rows [row_begin, row_end) of one strip: ys[o][8 * regs] = act(scale[o] * (W[o] . xs) + b[o]).
 * Exactly one of vals_f32 / vals_i8 is given. */
AVX2 ALWAYS_INLINE void csr_rows_avx2(const int regs, const float *xs, const int32_t *offsets, const uint16_t *cols, const float *vals_f32,
                                 const int8_t *vals_i8, const float *scales, const float *bias, int act,
                                 int row_begin, int row_end, float *ys) {
    for (int o = row_begin; o < row_end; o++) {
        __m256 a[4], c[4];
        for (int r = 0; r < regs; r++) a[r] = c[r] = _mm256_setzero_ps();
        int j = offsets[o];
        const int end = offsets[o + 1];
        for (; j + 1 < end; j += 2) {
            const float *p = xs + (size_t)cols[j] * (8 * regs), *q = xs + (size_t)cols[j + 1] * (8 * regs);
            __m256 v, w;
            if (vals_f32) {
                v = _mm256_broadcast_ss(vals_f32 + j);
                w = _mm256_broadcast_ss(vals_f32 + j + 1);
            } else {
                v = _mm256_set1_ps((float)vals_i8[j]);
                w = _mm256_set1_ps((float)vals_i8[j + 1]);
            }
            for (int r = 0; r < regs; r++) {
                a[r] = _mm256_fmadd_ps(v, _mm256_load_ps(p + 8 * r), a[r]);
                c[r] = _mm256_fmadd_ps(w, _mm256_load_ps(q + 8 * r), c[r]);
            }
        }
        if (j < end) {
            const float *p = xs + (size_t)cols[j] * (8 * regs);
            __m256 v = vals_f32 ? _mm256_broadcast_ss(vals_f32 + j) : _mm256_set1_ps((float)vals_i8[j]);
            for (int r = 0; r < regs; r++) a[r] = _mm256_fmadd_ps(v, _mm256_load_ps(p + 8 * r), a[r]);
        }
        finish_row(regs, a, c, scales ? scales[o] : 1.0f, bias ? bias[o] : 0.0f, act, ys + (size_t)o * (8 * regs));
    }
}

/* The same rows with 16 tokens a register and 64 a strip: each non-zero feeds four registers of its set, as
 * in AVX2, for twice the tokens. */
AVX512 ALWAYS_INLINE void csr_rows_avx512(const int regs, const float *xs, const int32_t *offsets, const uint16_t *cols,
                                     const float *vals_f32, const int8_t *vals_i8, const float *scales,
                                     const float *bias, int act, int row_begin, int row_end, float *ys) {
    for (int o = row_begin; o < row_end; o++) {
        __m512 a[4], c[4];
        for (int r = 0; r < regs; r++) a[r] = c[r] = _mm512_setzero_ps();
        int j = offsets[o];
        const int end = offsets[o + 1];
        for (; j + 1 < end; j += 2) {
            const float *p = xs + (size_t)cols[j] * (16 * regs), *q = xs + (size_t)cols[j + 1] * (16 * regs);
            const __m512 v = _mm512_set1_ps(vals_f32 ? vals_f32[j] : (float)vals_i8[j]);
            const __m512 w = _mm512_set1_ps(vals_f32 ? vals_f32[j + 1] : (float)vals_i8[j + 1]);
            for (int r = 0; r < regs; r++) {
                a[r] = _mm512_fmadd_ps(v, _mm512_load_ps(p + 16 * r), a[r]);
                c[r] = _mm512_fmadd_ps(w, _mm512_load_ps(q + 16 * r), c[r]);
            }
        }
        if (j < end) {
            const float *p = xs + (size_t)cols[j] * (16 * regs);
            const __m512 v = _mm512_set1_ps(vals_f32 ? vals_f32[j] : (float)vals_i8[j]);
            for (int r = 0; r < regs; r++) a[r] = _mm512_fmadd_ps(v, _mm512_load_ps(p + 16 * r), a[r]);
        }
        const __m512 s = _mm512_set1_ps(scales ? scales[o] : 1.0f), b = _mm512_set1_ps(bias ? bias[o] : 0.0f);
        float *y = ys + (size_t)o * (16 * regs);
        for (int r = 0; r < regs; r++) {
            const __m512 v = _mm512_fmadd_ps(_mm512_add_ps(a[r], c[r]), s, b);
            _mm512_store_ps(y + 16 * r, act == 1 ? gelu512(v) : v);
        }
    }
}

AVX2 static void strip_rows_avx2(int regs, const float *xs, const int32_t *offsets, const uint16_t *cols,
                                 const float *vals_f32, const int8_t *vals_i8, const float *scales, const float *bias,
                                 int act, int row_begin, int row_end, float *ys) {
    BY_REGS(regs, csr_rows_avx2, xs, offsets, cols, vals_f32, vals_i8, scales, bias, act, row_begin, row_end, ys);
}

AVX512 static void strip_rows_avx512(int regs, const float *xs, const int32_t *offsets, const uint16_t *cols,
                                     const float *vals_f32, const int8_t *vals_i8, const float *scales,
                                     const float *bias, int act, int row_begin, int row_end, float *ys) {
    BY_REGS(regs, csr_rows_avx512, xs, offsets, cols, vals_f32, vals_i8, scales, bias, act, row_begin, row_end, ys);
}

static void strip_rows(int regs, const float *xs, const int32_t *offsets, const uint16_t *cols, const float *vals_f32,
                       const int8_t *vals_i8, const float *scales, const float *bias, int act, int row_begin,
                       int row_end, float *ys) {
    (isa == ISA_AVX512 ? strip_rows_avx512 : strip_rows_avx2)(regs, xs, offsets, cols, vals_f32, vals_i8, scales,
                                                               bias, act, row_begin, row_end, ys);
}

/* ys[out][stride] -> out rows [start, start + width) (token-major, row stride ldo), 8 x 8 at a time. */
AVX2 static void unpack_strip(const float *ys, int out_f, int stride, int start, int width, float *out, int ldo) {
    const int o8 = out_f & ~7;
    for (int i0 = 0; i0 < width; i0 += 8) {
        const int n = width - i0 < 8 ? width - i0 : 8;
        float *dst = out + (size_t)(start + i0) * ldo;
        for (int o = 0; o < o8; o += 8) {
            __m256 v[8];
            for (int r = 0; r < 8; r++) v[r] = _mm256_load_ps(ys + (size_t)(o + r) * stride + i0);
            transpose8(v);
            for (int c = 0; c < n; c++) _mm256_storeu_ps(dst + (size_t)c * ldo + o, v[c]);
        }
        for (int o = o8; o < out_f; o++)
            for (int c = 0; c < n; c++) dst[(size_t)c * ldo + o] = ys[(size_t)o * stride + i0 + c];
    }
}


/* ---- int8 blocks of 1x4 ----
 * Where a matrix was pruned in blocks of 4 consecutive inputs (`prune --pattern 1x4`), each block is 4 int8
 * weights ([-127, 127]) with one fp32 scale per row, and the activations are quantized per token to 7 bits
 * ([0, 127], so that vpmaddubsw's pairwise sums cannot saturate: 2 * 127 * 127 < 2^15) with a zero point.
 * Seven-bit activations with eight-bit weights move a fine-tuned model's logits a third less than eight-bit
 * activations with seven-bit weights (benchmarks/int8_error.py):
 *   x ~ s_t * (q - z_t),  W[o] ~ w_o * Wq[o]  =>  y = s_t * w_o * (Wq[o] . q - z_t * sum(Wq[o])) + b.
 * A strip's quantized activations are laid out [group of 4 inputs][token][4 bytes], so a block is one
 * broadcast of its 4 weights and, per 8 tokens, vpmaddubsw + vpmaddwd + vpaddd: 32 multiply-adds. */

/* xs[in][stride] (fp32) -> xq[in / 4][stride][4] (uint8 in [0, 127]) and, per token, zero point and scale. */
AVX2 static void quantize_strip(const float *xs, int in_f, int stride, uint8_t *xq, float *zero, float *scale) {
    for (int r = 0; r < stride / 8; r++) {
        __m256 lo = _mm256_set1_ps(INFINITY), hi = _mm256_set1_ps(-INFINITY);
        for (int k = 0; k < in_f; k++) {
            __m256 v = _mm256_load_ps(xs + (size_t)k * stride + 8 * r);
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
        }
        lo = _mm256_min_ps(lo, _mm256_setzero_ps()); /* zero stays exact */
        hi = _mm256_max_ps(hi, _mm256_setzero_ps());
        __m256 s = _mm256_div_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps(127.0f));
        s = _mm256_blendv_ps(s, _mm256_set1_ps(1.0f), _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_EQ_OQ));
        __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
        __m256 z = _mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), lo), inv),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_ps(zero + 8 * r, z);
        _mm256_storeu_ps(scale + 8 * r, s);
        const __m256i zmax = _mm256_set1_epi32(127), zmin = _mm256_setzero_si256();
        for (int g = 0; g < in_f / 4; g++) {
            __m256i packed = _mm256_setzero_si256();
            for (int j = 0; j < 4; j++) {
                __m256 v = _mm256_load_ps(xs + (size_t)(4 * g + j) * stride + 8 * r);
                __m256i q = _mm256_cvtps_epi32(_mm256_fmadd_ps(v, inv, z));
                q = _mm256_min_epi32(_mm256_max_epi32(q, zmin), zmax);
                packed = _mm256_or_si256(packed, _mm256_slli_epi32(q, 8 * j));
            }
            _mm256_storeu_si256((__m256i *)(xq + (size_t)g * stride * 4 + 32 * r), packed);
        }
    }
}

/* One row of a strip from its integer sums acc (regs x 8 tokens): the zero points' correction, the scales, the
 * bias and the activation. */
AVX2 ALWAYS_INLINE void finish_row_i8x4(const int regs, const __m256i acc[4], const __m256 z[4], const __m256 s[4], int32_t row_sum,
                                        float weight_scale, float bias, int act, float *y) {
    const __m256 rs = _mm256_set1_ps((float)row_sum), ws = _mm256_set1_ps(weight_scale), b = _mm256_set1_ps(bias);
    for (int r = 0; r < regs; r++) {
        __m256 v = _mm256_fnmadd_ps(z[r], rs, _mm256_cvtepi32_ps(acc[r]));
        v = _mm256_fmadd_ps(v, _mm256_mul_ps(s[r], ws), b);
        _mm256_store_ps(y + 8 * r, act == 1 ? gelu(v) : v);
    }
}

AVX2 ALWAYS_INLINE void block_rows_avx2(const int regs, const uint8_t *xq, const float *zero, const float *scale, const int32_t *offsets,
                                      const uint16_t *cols, const int8_t *vals, const float *scales,
                                      const int32_t *row_sums, const float *bias, int act, int row_begin, int row_end,
                                      float *ys) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 z[4], s[4];
    for (int r = 0; r < regs; r++) {
        z[r] = _mm256_loadu_ps(zero + 8 * r);
        s[r] = _mm256_loadu_ps(scale + 8 * r);
    }
    for (int o = row_begin; o < row_end; o++) {
        __m256i acc[4];
        for (int r = 0; r < regs; r++) acc[r] = _mm256_setzero_si256();
        for (int j = offsets[o]; j < offsets[o + 1]; j++) {
            int32_t w4;
            memcpy(&w4, vals + 4 * (size_t)j, 4);
            const __m256i w = _mm256_set1_epi32(w4);
            const uint8_t *p = xq + (size_t)cols[j] * (8 * regs) * 4;
            for (int r = 0; r < regs; r++) {
                const __m256i pairs = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(p + 32 * r)), w);
                acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(pairs, ones));
            }
        }
        finish_row_i8x4(regs, acc, z, s, row_sums[o], scales[o], bias ? bias[o] : 0.0f, act, ys + (size_t)o * (8 * regs));
    }
}

/* The same rows with VNNI: one vpdpbusd per 16 tokens of a block. Activations within [0, 127] keep the AVX2
 * path's 16-bit pair sums from saturating, so both give the same integers. */
AVX512 ALWAYS_INLINE void block_rows_vnni(const int regs, const uint8_t *xq, const float *zero, const float *scale,
                                        const int32_t *offsets, const uint16_t *cols, const int8_t *vals,
                                        const float *scales, const int32_t *row_sums, const float *bias, int act,
                                        int row_begin, int row_end, float *ys) {
    __m512 z[4], s[4];
    for (int r = 0; r < regs; r++) {
        z[r] = _mm512_loadu_ps(zero + 16 * r);
        s[r] = _mm512_loadu_ps(scale + 16 * r);
    }
    for (int o = row_begin; o < row_end; o++) {
        __m512i acc[4];
        for (int r = 0; r < regs; r++) acc[r] = _mm512_setzero_si512();
        for (int j = offsets[o]; j < offsets[o + 1]; j++) {
            int32_t w4;
            memcpy(&w4, vals + 4 * (size_t)j, 4);
            const __m512i w = _mm512_set1_epi32(w4);
            const uint8_t *p = xq + (size_t)cols[j] * (16 * regs) * 4;
            for (int r = 0; r < regs; r++) acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_loadu_si512(p + 64 * r), w);
        }
        /* finish_row_i8x4's arithmetic, 16 tokens a register */
        const __m512 rs = _mm512_set1_ps((float)row_sums[o]), ws = _mm512_set1_ps(scales[o]);
        const __m512 b = _mm512_set1_ps(bias ? bias[o] : 0.0f);
        float *y = ys + (size_t)o * (16 * regs);
        for (int r = 0; r < regs; r++) {
            const __m512 v = _mm512_fmadd_ps(_mm512_fnmadd_ps(z[r], rs, _mm512_cvtepi32_ps(acc[r])), _mm512_mul_ps(s[r], ws), b);
            _mm512_store_ps(y + 16 * r, act == 1 ? gelu512(v) : v);
        }
    }
}

AVX2 static void strip_rows_i8x4_avx2(int regs, const uint8_t *xq, const float *zero, const float *scale,
                                      const int32_t *offsets, const uint16_t *cols, const int8_t *vals,
                                      const float *scales, const int32_t *row_sums, const float *bias, int act,
                                      int row_begin, int row_end, float *ys) {
    BY_REGS(regs, block_rows_avx2, xq, zero, scale, offsets, cols, vals, scales, row_sums, bias, act, row_begin,
            row_end, ys);
}

AVX512 static void strip_rows_i8x4_vnni(int regs, const uint8_t *xq, const float *zero, const float *scale,
                                        const int32_t *offsets, const uint16_t *cols, const int8_t *vals,
                                        const float *scales, const int32_t *row_sums, const float *bias, int act,
                                        int row_begin, int row_end, float *ys) {
    BY_REGS(regs, block_rows_vnni, xq, zero, scale, offsets, cols, vals, scales, row_sums, bias, act, row_begin,
            row_end, ys);
}

static void strip_rows_i8x4(int regs, const uint8_t *xq, const float *zero, const float *scale,
                            const int32_t *offsets, const uint16_t *cols, const int8_t *vals, const float *scales,
                            const int32_t *row_sums, const float *bias, int act, int row_begin, int row_end,
                            float *ys) {
    (isa == ISA_AVX512 ? strip_rows_i8x4_vnni : strip_rows_i8x4_avx2)(regs, xq, zero, scale, offsets, cols, vals,
                                                                       scales, row_sums, bias, act, row_begin,
                                                                       row_end, ys);
}

/* ---- the strip driver, shared by every product ----
 * A matrix as the kernels take it: CSR of single weights (fp32 values, or int8 with a scale per row) or of
 * int8 1x4 blocks (with each row's sum). A strip of its input is the fp32 strip [in][strip], and for blocks
 * also its uint8 form [in / 4][strip][4] with each token's zero point and scale. */
typedef struct {
    int in_f, out_f, block;
    const int32_t *offsets;
    const uint16_t *cols;
    const float *f32;
    const int8_t *i8;
    const float *scales;
    const int32_t *row_sums;
    const float *bias;
} Matrix;

static size_t input_floats(const Matrix *m) {
    const size_t fp32 = (size_t)strip_tokens * m->in_f;
    return m->block == 4 ? fp32 + fp32 / 4 + 2 * (size_t)strip_tokens : fp32;
}

/* The registers of tokens a strip of `width` real tokens fills (1, 2 or 4), and the stride of its rows. */
static int regs_of(int width) {
    const int lanes = isa == ISA_AVX512 ? 16 : 8, used = (width + lanes - 1) / lanes;
    return used == 3 ? 4 : used;
}

static int stride_of(int width) { return (isa == ISA_AVX512 ? 16 : 8) * regs_of(width); }

/* x's rows [start, start + width) as m's input strip (with x NULL: the strip already in xs, quantized for
 * blocks). */
static void prepare_strip(const Matrix *m, const float *x, int ldx, int start, int width, float *xs) {
    if (x) pack_strip(x, ldx, start, width, m->in_f, stride_of(width), xs);
    if (m->block == 4) {
        float *zero = xs + (size_t)strip_tokens * m->in_f * 5 / 4;
        quantize_strip(xs, m->in_f, stride_of(width), (uint8_t *)(xs + (size_t)strip_tokens * m->in_f), zero,
                       zero + strip_tokens);
    }
}

/* m's rows [row_begin, row_end) on a strip of `width` real tokens. */
static void run_rows(const Matrix *m, const float *xs, int width, int act, int row_begin, int row_end, float *ys) {
    const int regs = regs_of(width);
    if (m->block == 4) {
        const float *zero = xs + (size_t)strip_tokens * m->in_f * 5 / 4;
        strip_rows_i8x4(regs, (const uint8_t *)(xs + (size_t)strip_tokens * m->in_f), zero, zero + strip_tokens, m->offsets,
                        m->cols, m->i8, m->scales, m->row_sums, m->bias, act, row_begin, row_end, ys);
    } else {
        strip_rows(regs, xs, m->offsets, m->cols, m->f32, m->i8, m->scales, m->bias, act, row_begin, row_end, ys);
    }
}

/* Whether every thread can take whole strips without leaving another idle for long: as many strips as
 * threads (or a multiple), or at least two each. */
static int whole_strips(int strips, int threads) { return strips >= 2 * threads || strips % threads == 0; }

static int strips_of(int tokens) { return (tokens + strip_tokens - 1) / strip_tokens; }

/* A product with fewer strips than threads, smaller than this (non-zeros x token lanes), runs on one thread:
 * sharing its rows out means waking a second thread and moving the strip between the cores' caches, which
 * costs more than it saves (measured: a 384 x 384 matrix at 95% on 64 tokens, 470,000, took twice as long on
 * two threads as on one). Above it, two threads pay: a short sentence's FFN and QKV products at 90% (about
 * 900,000 and 700,000) on two threads encode STS-B sentences one at a time about 15% faster than on one
 * (an AVX-512 EPYC; below 200,000 the gain shrinks again). */
#define PARALLEL_WORK 600000

static int threads_for(int tokens, const Matrix *m1, const Matrix *m2) {
    const int strips = strips_of(tokens), last = tokens - (strips - 1) * strip_tokens;
    const double lanes = (double)(strips - 1) * strip_tokens + stride_of(last);
    const double nonzeros = (double)m1->offsets[m1->out_f] + (m2 ? (double)m2->offsets[m2->out_f] : 0.0);
    const int threads = omp_get_max_threads();
    return whole_strips(strips, threads) || nonzeros * lanes >= PARALLEL_WORK ? threads : 1;
}

/* Scratch of one strip: m1's input, m2's (the intermediate, where there is an m2) and the output strip. */
static size_t strip_floats(const Matrix *m1, const Matrix *m2) {
    const Matrix *last = m2 ? m2 : m1;
    return input_floats(m1) + (m2 ? input_floats(m2) : 0) + (size_t)strip_tokens * last->out_f;
}


/* The products the engine calls (through ctypes, with Matrix structs it builds once per matrix):
 * out = act(x @ W1.T + b1), or with m2 (NULL for none) the fused feed-forward block
 * out = act(x @ W1.T + b1) @ W2.T + b2, for x (tokens, in) and out (tokens, out) token-major.
 * work: sb_product_work() floats, 64-byte aligned.
 * With enough strips for every thread, each thread takes whole strips: packs one, runs every row on it (and
 * m2's on the intermediate, which never leaves its buffer in L2) and writes it back while the strip is still
 * in L1/L2. With fewer strips than that (a short batch), the strips are packed first and the rows are shared
 * out in blocks, so every thread has work; the fused block then returns 0, having done nothing, and the
 * caller runs its two products apart. A small product (a short sentence's) runs whole on one thread. */
size_t sb_product_work(int tokens, const Matrix *m1, const Matrix *m2) {
    const size_t strips = (size_t)strips_of(tokens), threads = (size_t)omp_get_max_threads();
    if (m2) return threads * strip_floats(m1, m2);  /* whole strips only: one per thread */
    return (strips > threads ? strips : threads) * strip_floats(m1, NULL);
}

/* Whether a product runs strip by strip, each thread on whole strips (else its rows are shared out). */
static int streams(int tokens, const Matrix *m1, const Matrix *m2) {
    return whole_strips(strips_of(tokens), threads_for(tokens, m1, m2));
}

int sb_product(int tokens, const float *x, int ldx, const Matrix *m1, int act, const Matrix *m2, float *out, int ldo,
               float *work) {
    const int strips = strips_of(tokens), threads = threads_for(tokens, m1, m2);
    const int streaming = streams(tokens, m1, m2);
    const Matrix *last = m2 ? m2 : m1;
    const size_t per_strip = strip_floats(m1, m2);
    if (m2 && !streaming) return 0;
    const int blocks = streaming ? 1 : (last->out_f + ROW_BLOCK - 1) / ROW_BLOCK;
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int s = 0; s < strips; s++) {
            float *xs = work + (size_t)(streaming ? omp_get_thread_num() : s) * per_strip;
            float *ys = xs + per_strip - (size_t)strip_tokens * last->out_f;
            const int start = s * strip_tokens, width = tokens - start < strip_tokens ? tokens - start : strip_tokens;
            prepare_strip(m1, x, ldx, start, width, xs);
            if (streaming) {
                if (m2) {
                    float *hs = xs + input_floats(m1);
                    run_rows(m1, xs, width, act, 0, m1->out_f, hs);
                    prepare_strip(m2, NULL, 0, 0, width, hs);
                    run_rows(m2, hs, width, 0, 0, m2->out_f, ys);
                } else {
                    run_rows(m1, xs, width, act, 0, m1->out_f, ys);
                }
                unpack_strip(ys, last->out_f, stride_of(width), start, width, out, ldo);
            }
        }
        if (!streaming) {
            #pragma omp for schedule(static)
            for (int task = 0; task < strips * blocks; task++) {
                const int s = task / blocks, block = task % blocks, start = s * strip_tokens;
                const int row_end = (block + 1) * ROW_BLOCK < m1->out_f ? (block + 1) * ROW_BLOCK : m1->out_f;
                const int width = tokens - start < strip_tokens ? tokens - start : strip_tokens;
                float *xs = work + (size_t)s * per_strip;
                run_rows(m1, xs, width, act, block * ROW_BLOCK, row_end, xs + per_strip - (size_t)strip_tokens * m1->out_f);
            }
            #pragma omp for schedule(static)
            for (int s = 0; s < strips; s++) {
                const int start = s * strip_tokens, width = tokens - start < strip_tokens ? tokens - start : strip_tokens;
                unpack_strip(work + (size_t)(s + 1) * per_strip - (size_t)strip_tokens * m1->out_f, m1->out_f,
                             stride_of(width), start, width, out, ldo);
            }
        }
    }
    return 1;
}

/* out = LayerNorm(a + b) * gamma + beta over rows of `hidden` floats (the residual and the norm of every
 * BERT layer in one pass); out may be a or b. */
AVX2 static float sum_lanes(__m256 v) {
    float lanes[8], total = 0.0f;
    _mm256_storeu_ps(lanes, v);
    for (int l = 0; l < 8; l++) total += lanes[l];
    return total;
}

/* Two passes over the row (mean, then the squares about it), as PyTorch's LayerNorm: E[x^2] - mean^2
 * loses digits on BERT's outlier dimensions. hidden is a multiple of 8 (the caller checks). */
AVX2 void sb_add_layernorm(int rows, int hidden, const float *a, const float *b, const float *gamma,
                           const float *beta, float eps, float *out) {
    #pragma omp parallel for schedule(static) if (rows >= 64)
    for (int r = 0; r < rows; r++) {
        const float *pa = a + (size_t)r * hidden, *pb = b + (size_t)r * hidden;
        float *po = out + (size_t)r * hidden;
        __m256 sum = _mm256_setzero_ps(), sq = _mm256_setzero_ps();
        for (int i = 0; i < hidden; i += 8) {
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(pa + i), _mm256_loadu_ps(pb + i));
            _mm256_storeu_ps(po + i, v);
            sum = _mm256_add_ps(sum, v);
        }
        __m256 m = _mm256_set1_ps(sum_lanes(sum) / hidden);
        for (int i = 0; i < hidden; i += 8) {
            __m256 d = _mm256_sub_ps(_mm256_loadu_ps(po + i), m);
            sq = _mm256_fmadd_ps(d, d, sq);
        }
        __m256 s = _mm256_set1_ps(1.0f / sqrtf(sum_lanes(sq) / hidden + eps));
        for (int i = 0; i < hidden; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(po + i), m), s);
            _mm256_storeu_ps(po + i, _mm256_fmadd_ps(v, _mm256_loadu_ps(gamma + i), _mm256_loadu_ps(beta + i)));
        }
    }
}

/* Attention over packed sequences: sequence b holds the rows [starts[b], starts[b + 1]) of qkv (each row:
 * the head_dim-wide slices of Q for every head, then K, then V) and of out (the heads' outputs side by
 * side). Only real tokens are stored, so padding costs nothing. One task per (sequence, head):
 * Q (scaled), K^T (laid out [dim][key]) and V are copied out of the token rows first, then for each block of
 * query rows (their scores stay in L1):
 *   S = (Q * scale) K^T   AVX2: 4 query rows x 16 keys in 8 registers; AVX-512: 4 x 32;
 *   P = softmax(S)        row by row, vectorised exp (the division by the sum applied to O's rows);
 *   O = P V               AVX2: 2 query rows x 32 dims in 8 registers; AVX-512: 4 x 32.
 * Both widths run each score and output as the same chain of multiply-adds, and sum a row's exponentials
 * in the same order, so they give the same values. head_dim must be a multiple of 8 (the caller checks). */
static inline int round_up(int n, int m) { return (n + m - 1) / m * m; }

#define KEYS 32 /* keys are padded to a multiple of this (16 with AVX2), zero keys masked out of the softmax */

size_t sb_attention_work(int max_length, int head_dim) {
    size_t lp = (size_t)round_up(max_length, KEYS);
    return (size_t)omp_get_max_threads() * (3 * lp * head_dim + 4 * lp);
}

/* Attention in bfloat16 (an int8 model's: its tolerance has room for it) has one definition: Q * scale, K, V
 * and the softmax's exponentials rounded to bfloat16 (to nearest, ties to even), their products summed in fp32,
 * and the softmax's sum taken before rounding. With AVX-512 BF16 vdpbf16ps sums the products two at a time;
 * elsewhere the fp32 kernels below run on the rounded values, the same sums in another order. So the paths
 * agree to fp32 rounding, except where a score's last bits move an exponential across a bfloat16 rounding
 * boundary: that weight then differs by one bfloat16 step (2^-8 of it), and vdpbf16ps flushes subnormals. The
 * fp32 kernels round with round_bf16 (above). */

/* Q * scale and V into [row][dim] and K into [dim][key] (zero past length), 8 x 8 blocks at a time, rounded
 * to bfloat16 where `bf16`: rows of qkv lie 3 x hidden floats apart, a stride that maps V's rows onto a few
 * L1 sets, so P V read them from L2 where it read them in place. */
AVX2 static void copy_head(int length, int lp, int head_dim, const float *q, const float *k, const float *v, int ld,
                           float scale, int bf16, float *qs, float *kt, float *vs) {
    const __m256 sc = _mm256_set1_ps(scale);
    for (int i = 0; i < lp; i++)
        for (int c = 0; c < head_dim; c += 8) {
            const int real = i < length;
            __m256 qv = real ? _mm256_mul_ps(_mm256_loadu_ps(q + (size_t)i * ld + c), sc) : _mm256_setzero_ps();
            _mm256_storeu_ps(qs + (size_t)i * head_dim + c, bf16 ? round_bf16(qv) : qv);
            if (real) {
                const __m256 vv = _mm256_loadu_ps(v + (size_t)i * ld + c);
                _mm256_storeu_ps(vs + (size_t)i * head_dim + c, bf16 ? round_bf16(vv) : vv);
            }
        }
    for (int i0 = 0; i0 < lp; i0 += 8)
        for (int c = 0; c < head_dim; c += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) {
                r[i] = i0 + i < length ? _mm256_loadu_ps(k + (size_t)(i0 + i) * ld + c) : _mm256_setzero_ps();
                if (bf16) r[i] = round_bf16(r[i]);
            }
            transpose8(r);
            for (int d = 0; d < 8; d++) _mm256_storeu_ps(kt + (size_t)(c + d) * lp + i0, r[d]);
        }
}

/* exp(row - max) in place (rounded to bfloat16 where `bf16`); returns 1 / the sum, which P V applies to its
 * output rows instead of a pass over the row here. */
AVX2 static float softmax_row(float *row, int length, int lp, int bf16) {
    for (int j = length; j < lp; j++) row[j] = -INFINITY;
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < lp; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(row + j));
    float lanes[8], peak = -INFINITY;
    _mm256_storeu_ps(lanes, m);
    for (int l = 0; l < 8; l++) peak = lanes[l] > peak ? lanes[l] : peak;
    __m256 sum = _mm256_setzero_ps(), mx = _mm256_set1_ps(peak);
    for (int j = 0; j < lp; j += 8) {
        __m256 e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(row + j), mx));
        _mm256_storeu_ps(row + j, bf16 ? round_bf16(e) : e);
        sum = _mm256_add_ps(sum, e);
    }
    return 1.0f / sum_lanes(sum);  /* the same order in both widths */
}

AVX512 static float softmax_row512(float *row, int length, int lp, int bf16) {
    for (int j = length; j < lp; j++) row[j] = -INFINITY;
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < lp; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(row + j));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    __m256 sum = _mm256_setzero_ps();
    for (int j = 0; j < lp; j += 16) {
        __m512 e = exp_neg512(_mm512_sub_ps(_mm512_loadu_ps(row + j), mx));
        _mm512_storeu_ps(row + j, bf16 ? round_bf16512(e) : e);
        sum = _mm256_add_ps(_mm256_add_ps(sum, _mm512_castps512_ps256(e)), _mm512_extractf32x8_ps(e, 1));
    }
    return 1.0f / sum_lanes(sum);  /* the same order in both widths */
}

/* out rows 0..rows - 1 (rows <= 4, ldo apart) = P rows (lp apart) times V, each scaled by its inv; 16 dims at a
 * time, so that each load of V feeds four rows; a last 8-dim group alone. */
AVX2 static void pv_rows(const float *p, int lp, const float *inv, int rows, int length, int head_dim,
                         const float *v, float *out, int ldo) {
    const float *p1 = p + lp, *p2 = p + 2 * (size_t)lp, *p3 = p + 3 * (size_t)lp;
    int c = 0;
    for (; c + 16 <= head_dim; c += 16) {  /* named sums: GCC kept a 4 x 2 array of them in memory */
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, d0 = a0, d1 = a0, e0 = a0, e1 = a0;
        for (int j = 0; j < length; j++) {
            const float *vr = v + (size_t)j * head_dim + c;
            const __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
            __m256 x = _mm256_broadcast_ss(p + j), y = _mm256_broadcast_ss(p1 + j);
            a0 = _mm256_fmadd_ps(x, v0, a0); a1 = _mm256_fmadd_ps(x, v1, a1);
            b0 = _mm256_fmadd_ps(y, v0, b0); b1 = _mm256_fmadd_ps(y, v1, b1);
            x = _mm256_broadcast_ss(p2 + j); y = _mm256_broadcast_ss(p3 + j);
            d0 = _mm256_fmadd_ps(x, v0, d0); d1 = _mm256_fmadd_ps(x, v1, d1);
            e0 = _mm256_fmadd_ps(y, v0, e0); e1 = _mm256_fmadd_ps(y, v1, e1);
        }
        const __m256 sums[4][2] = {{a0, a1}, {b0, b1}, {d0, d1}, {e0, e1}};
        for (int r = 0; r < rows; r++) {
            const __m256 s = _mm256_set1_ps(inv[r]);
            _mm256_storeu_ps(out + (size_t)r * ldo + c, _mm256_mul_ps(sums[r][0], s));
            _mm256_storeu_ps(out + (size_t)r * ldo + c + 8, _mm256_mul_ps(sums[r][1], s));
        }
    }
    for (; c < head_dim; c += 8) {
        __m256 a[4];
        for (int r = 0; r < 4; r++) a[r] = _mm256_setzero_ps();
        for (int j = 0; j < length; j++) {
            const __m256 vv = _mm256_loadu_ps(v + (size_t)j * head_dim + c);
            for (int r = 0; r < 4; r++) a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (size_t)r * lp + j), vv, a[r]);
        }
        for (int r = 0; r < rows; r++)
            _mm256_storeu_ps(out + (size_t)r * ldo + c, _mm256_mul_ps(a[r], _mm256_set1_ps(inv[r])));
    }
}

/* out rows 0..rows - 1 (rows <= 4, ldo apart) = P rows times V, each scaled by its inv; 32 dims at a time in
 * zmm, the last 8-dim groups in ymm. */
AVX512 static void pv_rows512(const float *p, int lp, const float *inv, int rows, int length, int head_dim,
                              const float *v, float *out, int ldo) {
    int c = 0;
    for (; c + 32 <= head_dim; c += 32) {
        __m512 a[4][2];
        for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = _mm512_setzero_ps();
        for (int j = 0; j < length; j++) {
            const float *vr = v + (size_t)j * head_dim + c;
            const __m512 v0 = _mm512_loadu_ps(vr), v1 = _mm512_loadu_ps(vr + 16);
            for (int r = 0; r < 4; r++) {
                const __m512 x = _mm512_set1_ps(p[(size_t)r * lp + j]);
                a[r][0] = _mm512_fmadd_ps(x, v0, a[r][0]);
                a[r][1] = _mm512_fmadd_ps(x, v1, a[r][1]);
            }
        }
        for (int r = 0; r < rows; r++) {
            const __m512 s = _mm512_set1_ps(inv[r]);
            _mm512_storeu_ps(out + (size_t)r * ldo + c, _mm512_mul_ps(a[r][0], s));
            _mm512_storeu_ps(out + (size_t)r * ldo + c + 16, _mm512_mul_ps(a[r][1], s));
        }
    }
    for (; c < head_dim; c += 8) {
        __m256 a[4];
        for (int r = 0; r < 4; r++) a[r] = _mm256_setzero_ps();
        for (int j = 0; j < length; j++) {
            const __m256 vv = _mm256_loadu_ps(v + (size_t)j * head_dim + c);
            for (int r = 0; r < 4; r++) a[r] = _mm256_fmadd_ps(_mm256_set1_ps(p[(size_t)r * lp + j]), vv, a[r]);
        }
        for (int r = 0; r < rows; r++)
            _mm256_storeu_ps(out + (size_t)r * ldo + c, _mm256_mul_ps(a[r], _mm256_set1_ps(inv[r])));
    }
}

/* Scores of 4 query rows (qr, rows head_dim apart) against every key: sc[r][j] for j < lp. */
AVX2 static void scores_avx2(const float *qr, const float *kt, int lp, int head_dim, float *sc) {
    for (int j = 0; j < lp; j += 16) {
        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
        for (int c = 0; c < head_dim; c++) {
            __m256 k0 = _mm256_loadu_ps(kt + (size_t)c * lp + j), k1 = _mm256_loadu_ps(kt + (size_t)c * lp + j + 8);
            __m256 a = _mm256_broadcast_ss(qr + c), b = _mm256_broadcast_ss(qr + head_dim + c);
            s00 = _mm256_fmadd_ps(a, k0, s00); s01 = _mm256_fmadd_ps(a, k1, s01);
            s10 = _mm256_fmadd_ps(b, k0, s10); s11 = _mm256_fmadd_ps(b, k1, s11);
            a = _mm256_broadcast_ss(qr + 2 * head_dim + c);
            b = _mm256_broadcast_ss(qr + 3 * head_dim + c);
            s20 = _mm256_fmadd_ps(a, k0, s20); s21 = _mm256_fmadd_ps(a, k1, s21);
            s30 = _mm256_fmadd_ps(b, k0, s30); s31 = _mm256_fmadd_ps(b, k1, s31);
        }
        float *row = sc + j;
        _mm256_storeu_ps(row, s00); _mm256_storeu_ps(row + 8, s01);
        _mm256_storeu_ps(row + lp, s10); _mm256_storeu_ps(row + lp + 8, s11);
        _mm256_storeu_ps(row + 2 * lp, s20); _mm256_storeu_ps(row + 2 * lp + 8, s21);
        _mm256_storeu_ps(row + 3 * lp, s30); _mm256_storeu_ps(row + 3 * lp + 8, s31);
    }
}

AVX512 static void scores_avx512(const float *qr, const float *kt, int lp, int head_dim, float *sc) {
    for (int j = 0; j < lp; j += 32) {
        __m512 s[4][2];
        for (int r = 0; r < 4; r++) s[r][0] = s[r][1] = _mm512_setzero_ps();
        for (int c = 0; c < head_dim; c++) {
            const __m512 k0 = _mm512_loadu_ps(kt + (size_t)c * lp + j), k1 = _mm512_loadu_ps(kt + (size_t)c * lp + j + 16);
            for (int r = 0; r < 4; r++) {
                const __m512 x = _mm512_set1_ps(qr[(size_t)r * head_dim + c]);
                s[r][0] = _mm512_fmadd_ps(x, k0, s[r][0]);
                s[r][1] = _mm512_fmadd_ps(x, k1, s[r][1]);
            }
        }
        for (int r = 0; r < 4; r++) {
            _mm512_storeu_ps(sc + (size_t)r * lp + j, s[r][0]);
            _mm512_storeu_ps(sc + (size_t)r * lp + j + 16, s[r][1]);
        }
    }
}

/* Softmax of `rows` score rows and their outputs (rows of out, ldo apart) = P V. */
AVX2 static void softmax_pv_avx2(float *sc, int lp, int rows, int length, int head_dim, int bf16, const float *vs,
                                 float *out, int ldo) {
    float inv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int r = 0; r < rows; r++) inv[r] = softmax_row(sc + (size_t)r * lp, length, lp, bf16);
    pv_rows(sc, lp, inv, rows, length, head_dim, vs, out, ldo);
}

AVX512 static void softmax_pv_avx512(float *sc, int lp, int rows, int length, int head_dim, int bf16, const float *vs,
                                     float *out, int ldo) {
    float inv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int r = 0; r < rows; r++) inv[r] = softmax_row512(sc + (size_t)r * lp, length, lp, bf16);
    pv_rows512(sc, lp, inv, rows, length, head_dim, vs, out, ldo);
}

#if HAVE_AVX512_BF16
/* The bfloat16 layouts vdpbf16ps pairs up: Q * scale as [row][dim]; K as [dim pair][key] words, each the
 * key's dims 2c and 2c + 1 (the rows rounded into `rows`, then transposed as 8 x 8 blocks of words); V as
 * [key pair][dim] words, each the dim of keys 2j and 2j + 1. Zero past length. */
AVX512_BF16 static void copy_head_bf16(int length, int lp, int head_dim, const float *q, const float *k,
                                       const float *v, int ld, float scale, uint16_t *qs, uint32_t *kt, uint32_t *vs,
                                       uint16_t *rows) {
    const __m512 sc = _mm512_set1_ps(scale);
    for (int i = 0; i < lp; i++)
        for (int c = 0; c < head_dim; c += 16) {
            const int real = i < length;
            const __m512 qv = real ? _mm512_mul_ps(_mm512_loadu_ps(q + (size_t)i * ld + c), sc) : _mm512_setzero_ps();
            const __m512 kv = real ? _mm512_loadu_ps(k + (size_t)i * ld + c) : _mm512_setzero_ps();
            _mm256_storeu_si256((__m256i *)(qs + (size_t)i * head_dim + c), (__m256i)_mm512_cvtneps_pbh(qv));
            _mm256_storeu_si256((__m256i *)(rows + (size_t)i * head_dim + c), (__m256i)_mm512_cvtneps_pbh(kv));
        }
    for (int i0 = 0; i0 < lp; i0 += 8)
        for (int w = 0; w < head_dim / 2; w += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps((const float *)(rows + (size_t)(i0 + i) * head_dim) + w);
            transpose8(r);
            for (int d = 0; d < 8; d++) _mm256_storeu_ps((float *)(kt + (size_t)(w + d) * lp + i0), r[d]);
        }
    for (int j = 0; j < lp; j += 2)
        for (int c = 0; c < head_dim; c += 16) {
            const __m512 a = j < length ? _mm512_loadu_ps(v + (size_t)j * ld + c) : _mm512_setzero_ps();
            const __m512 b = j + 1 < length ? _mm512_loadu_ps(v + (size_t)(j + 1) * ld + c) : _mm512_setzero_ps();
            const __m512i first = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
            const __m512i second = _mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b)), 16);
            _mm512_storeu_si512(vs + (size_t)(j / 2) * head_dim + c, _mm512_or_si512(first, second));
        }
}

/* acc[r][0..1] (4 rows x 32 columns) = sum over t < steps of the pairs x[r * x_row + t] times the 32 columns'
 * pairs y[t * y_step ..][32]: 8 vdpbf16ps a step, each summing two products per column. */
AVX512_BF16 ALWAYS_INLINE void dot_4x32_bf16(const uint32_t *x, size_t x_row, const uint32_t *y, size_t y_step,
                                             int steps, __m512 acc[4][2]) {
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int t = 0; t < steps; t++) {
        const __m512bh y0 = (__m512bh)_mm512_loadu_si512(y + (size_t)t * y_step);
        const __m512bh y1 = (__m512bh)_mm512_loadu_si512(y + (size_t)t * y_step + 16);
        for (int r = 0; r < 4; r++) {
            const __m512bh pair = (__m512bh)_mm512_set1_epi32((int)x[(size_t)r * x_row + t]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], pair, y0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], pair, y1);
        }
    }
}

/* Scores of 4 query rows (qr, rows head_dim apart) against every key, two dims per product pair. */
AVX512_BF16 static void scores_bf16(const uint16_t *qr, const uint32_t *kt, int lp, int head_dim, float *sc) {
    for (int j = 0; j < lp; j += 32) {
        __m512 s[4][2];
        dot_4x32_bf16((const uint32_t *)qr, head_dim / 2, kt + j, lp, head_dim / 2, s);
        for (int r = 0; r < 4; r++) {
            _mm512_storeu_ps(sc + (size_t)r * lp + j, s[r][0]);
            _mm512_storeu_ps(sc + (size_t)r * lp + j + 16, s[r][1]);
        }
    }
}

/* Softmax of `rows` score rows, the exponentials rounded into p (bf16, lp apart), and their outputs (rows of
 * out, ldo apart) = P V, two keys per vdpbf16ps, 32 dims at a time. */
AVX512_BF16 static void softmax_pv_bf16(float *sc, uint16_t *p, int lp, int rows, int length, int head_dim,
                                        const uint32_t *vs, float *out, int ldo) {
    float inv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int r = 0; r < rows; r++) {
        inv[r] = softmax_row512(sc + (size_t)r * lp, length, lp, 0);
        for (int j = 0; j < lp; j += 16)
            _mm256_storeu_si256((__m256i *)(p + (size_t)r * lp + j),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(sc + (size_t)r * lp + j)));
    }
    const int pairs = (length + 1) / 2;  /* past length the exponentials are ~0 and V is 0 */
    for (int c = 0; c < head_dim; c += 32) {
        __m512 a[4][2];
        dot_4x32_bf16((const uint32_t *)p, lp / 2, vs + c, head_dim, pairs, a);
        for (int r = 0; r < rows; r++) {
            const __m512 s = _mm512_set1_ps(inv[r]);
            _mm512_storeu_ps(out + (size_t)r * ldo + c, _mm512_mul_ps(a[r][0], s));
            _mm512_storeu_ps(out + (size_t)r * ldo + c + 16, _mm512_mul_ps(a[r][1], s));
        }
    }
}

#endif

/* One head of one sequence, four query rows at a time (their scores stay in L1). `wide`: the AVX-512 kernels;
 * `bf16`: 0 fp32, 1 bfloat16 on fp32 products, 2 bfloat16 on vdpbf16ps (chosen once a call, so that a width
 * changed meanwhile cannot mix them). */
static void attention_head(int length, int head_dim, const float *q, const float *k, const float *v, int ld,
                           float scale, int wide, int bf16, float *out, int ldo, float *work) {
    const int lp = round_up(length, wide ? KEYS : 16);
    const size_t block = (size_t)lp * head_dim;
#if HAVE_AVX512_BF16
    if (bf16 == 2) {  /* within the fp32 path's scratch: half-size values */
        uint16_t *qs = (uint16_t *)work, *rows = qs + block, *p = rows + block;
        uint32_t *kt = (uint32_t *)(p + 4 * (size_t)lp), *vs = kt + block / 2;
        float *sc = (float *)(vs + block / 2);
        copy_head_bf16(length, lp, head_dim, q, k, v, ld, scale, qs, kt, vs, rows);
        for (int i = 0; i < length; i += 4) {
            scores_bf16(qs + (size_t)i * head_dim, kt, lp, head_dim, sc);
            softmax_pv_bf16(sc, p, lp, length - i < 4 ? length - i : 4, length, head_dim, vs, out + (size_t)i * ldo,
                            ldo);
        }
        return;
    }
#endif
    float *qs = work, *kt = qs + block, *vs = kt + block, *sc = vs + block;
    copy_head(length, lp, head_dim, q, k, v, ld, scale, bf16, qs, kt, vs);
    for (int i = 0; i < length; i += 4) {
        const int rows = length - i < 4 ? length - i : 4;
        (wide ? scores_avx512 : scores_avx2)(qs + (size_t)i * head_dim, kt, lp, head_dim, sc);
        (wide ? softmax_pv_avx512 : softmax_pv_avx2)(sc, lp, rows, length, head_dim, bf16, vs, out + (size_t)i * ldo,
                                                     ldo);
    }
}

/* Softmax attention of packed sequences (sequence b: rows starts[b]..starts[b + 1] of qkv), in fp32 or, where
 * `bf16`, in bfloat16 as defined above. */
AVX2 void sb_attention(int batch, const int32_t *starts, int heads, int head_dim, const float *qkv, int ld,
                       float scale, int bf16, float *out, int ldo, float *work) {
    const int hidden = heads * head_dim;
    int max_length = 0;
    for (int b = 0; b < batch; b++)
        if (starts[b + 1] - starts[b] > max_length) max_length = starts[b + 1] - starts[b];
    const size_t lp = (size_t)round_up(max_length, KEYS), per_thread = 3 * lp * head_dim + 4 * lp;
    const int wide = isa == ISA_AVX512, mode = bf16 ? (wide && bf16_dot && head_dim % 32 == 0 ? 2 : 1) : 0;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < batch * heads; task++) {
        const int b = task / heads, h = task % heads, start = starts[b];
        const float *q = qkv + (size_t)start * ld + h * head_dim;
        attention_head(starts[b + 1] - start, head_dim, q, q + hidden, q + 2 * hidden, ld, scale, wide, mode,
                       out + (size_t)start * ldo + h * head_dim, ldo, work + omp_get_thread_num() * per_thread);
    }
}

/* GELU in place on n floats (the dense fall-back's activation, so both paths compute the same GELU). */
AVX2 void sb_gelu(float *x, size_t n) {
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n / 8; i++) _mm256_storeu_ps(x + 8 * i, gelu(_mm256_loadu_ps(x + 8 * i)));
    for (size_t i = n / 8 * 8; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

/* ---- One encoder layer in one call ----
 * A layer whose four matrices run sparse, with erf GELU, on right-padded (packed) sequences: the engine's calls
 * for it made from here, the same kernels in the same order as the engine makes them one by one (so the same
 * answers, bit for bit), without a return to Python between them, which for one short sentence costs more than
 * its products. */
typedef struct {
    Matrix qkv, attention_out, up, down;
    const float *attention_norm_weight, *attention_norm_bias, *output_norm_weight, *output_norm_bias;
} Layer;

static size_t aligned(size_t floats) { return (floats + 15) & ~(size_t)15; } /* 64 bytes */

static size_t larger(size_t a, size_t b) { return a > b ? a : b; }

/* Scratch floats for sb_layer: the layer's intermediate results, then the kernels' own work. */
size_t sb_layer_work(int tokens, const Layer *l, int max_length, int heads) {
    const size_t t = (size_t)tokens, hidden = (size_t)l->attention_out.out_f;
    const size_t up = streams(tokens, &l->up, &l->down) ? 0 : t * l->up.out_f;
    size_t work = sb_attention_work(max_length, (int)hidden / heads);
    work = larger(work, sb_product_work(tokens, &l->qkv, NULL));
    work = larger(work, sb_product_work(tokens, &l->attention_out, NULL));
    work = larger(work, up ? larger(sb_product_work(tokens, &l->up, NULL), sb_product_work(tokens, &l->down, NULL))
                           : sb_product_work(tokens, &l->up, &l->down));
    return aligned(t * 3 * hidden) + 3 * aligned(t * hidden) + aligned(up) + work;
}

/* out = the layer applied to h (tokens, hidden), both token-major; out may be h. Sequence b holds the rows
 * [starts[b], starts[b + 1]); work: sb_layer_work() floats, 64-byte aligned. */
void sb_layer(int tokens, const float *h, const Layer *l, int sequences, const int32_t *starts, int heads,
              float scale, int bf16, float eps, float *out, float *work) {
    const int hidden = l->attention_out.out_f, inter = l->up.out_f;
    const size_t t = (size_t)tokens;
    float *qkv = work, *context = qkv + aligned(t * 3 * hidden), *attended = context + aligned(t * hidden);
    float *down = attended + aligned(t * hidden), *up = down + aligned(t * hidden);
    float *scratch = up + (streams(tokens, &l->up, &l->down) ? 0 : aligned(t * inter));
    sb_product(tokens, h, hidden, &l->qkv, 0, NULL, qkv, 3 * hidden, scratch);
    sb_attention(sequences, starts, heads, hidden / heads, qkv, 3 * hidden, scale, bf16, context, hidden, scratch);
    sb_product(tokens, context, hidden, &l->attention_out, 0, NULL, attended, hidden, scratch);
    sb_add_layernorm(tokens, hidden, attended, h, l->attention_norm_weight, l->attention_norm_bias, eps, attended);
    if (!sb_product(tokens, attended, hidden, &l->up, 1, &l->down, down, hidden, scratch)) {
        sb_product(tokens, attended, hidden, &l->up, 1, NULL, up, inter, scratch);
        sb_product(tokens, up, inter, &l->down, 0, NULL, down, hidden, scratch);
    }
    sb_add_layernorm(tokens, hidden, down, attended, l->output_norm_weight, l->output_norm_bias, eps, out);
}

/* A module object, so that the install builds and finds this file like any extension; the functions
 * are called through ctypes. */
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_spmm", "sparse kernels (called through ctypes)", -1, NULL};

PyMODINIT_FUNC PyInit__spmm(void) { return PyModule_Create(&module); }
