// Uniform B-spline kernels for kangnn's KANLinear on CPU (loaded by kangnn/kan/native.py).
//
// Row n of the features is function major: [act(x) | B_0(x) | ... | B_{K-1}(x)], each block P
// wide. At v = x * inv_h + shift (knot units from the first knot) the interval is m = floor(v)
// and the non-zero functions are B_{m-k+r}, r = 0..k, with values sum_d M[d][r] t^d at
// t = v - m (M: kangnn.kan.basis._bspline_local_polynomials). Each row is computed as dense
// planes over the inputs p, a SIMD register of inputs at a time (vector extensions): the k + 1
// polynomial values stay in registers while the row's K functions select from them.
#include <cmath>
#include <cstdint>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// GCC/Clang vector extensions: one register of lanes, as wide as the target's SIMD registers.
// Wider than the registers is slow: on an AVX2 CPU, 64-byte vectors made a KANLinear forward
// and backward 2.5x slower than 32-byte ones.
#if defined(__AVX512F__)
#define KANGNN_VECTOR_BYTES 64
#elif defined(__AVX__)
#define KANGNN_VECTOR_BYTES 32
#else
#define KANGNN_VECTOR_BYTES 16
#endif
template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float V __attribute__((vector_size(KANGNN_VECTOR_BYTES)));
  typedef int32_t I __attribute__((vector_size(KANGNN_VECTOR_BYTES)));
};
template <>
struct Lanes<double> {
  typedef double V __attribute__((vector_size(KANGNN_VECTOR_BYTES)));
  typedef int64_t I __attribute__((vector_size(KANGNN_VECTOR_BYTES)));
};

template <typename T, int k>
struct Rows {
  typedef typename Lanes<T>::V V;
  typedef typename Lanes<T>::I I;
  static constexpr int L = sizeof(V) / sizeof(T);

  // c[d][r]: coefficient of t^d of polynomial r, for polynomials of degree D.
  template <int D>
  static inline void coefficients(const double *M, T (&c)[k + 1][k + 1]) {
    for (int d = 0; d <= k; d++)
      for (int r = 0; r <= k; r++) {
        const int e = d + (k - D);  // D = k - 1: the derivative, d M[d + 1][r] (d + 1)
        c[d][r] = e <= k ? T(M[e * (k + 1) + r] * (k == D ? 1 : e)) : T(0);
      }
  }

  // L inputs at once: the interval's first function, and the k + 1 polynomials at t.
  template <int D>
  static inline V locate(V xv, V sv, V hv, T top, const T (&c)[k + 1][k + 1], V (&w)[k + 1]) {
    V v = xv * hv + sv;
    v = v < T(-1) ? V{} + T(-1) : v;  // far inputs: every function is zero
    v = v > top ? V{} + top : v;
    const V trunc = __builtin_convertvector(__builtin_convertvector(v, I), V);
    const V m = trunc > v ? trunc - T(1) : trunc;  // floor (v >= -1)
    const V t = v - m;
    for (int r = 0; r <= k; r++) {
      V acc = V{} + c[D][r];
      for (int d = D - 1; d >= 0; d--) acc = acc * t + c[d][r];
      w[r] = acc;
    }
    return m - T(k);
  }

  template <int D>
  static inline T locate1(T x, T s, T h, T top, const T (&c)[k + 1][k + 1], T (&w)[k + 1]) {
    T v = x * h + s;
    v = v < T(-1) ? T(-1) : (v > top ? top : v);
    const T m = std::floor(v);
    const T t = v - m;
    for (int r = 0; r <= k; r++) {
      T acc = c[D][r];
      for (int d = D - 1; d >= 0; d--) acc = acc * t + c[d][r];
      w[r] = acc;
    }
    return m - T(k);
  }

  static inline V load(const T *p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }

  static void features(const T *x, const T *shift, const T *inv_h, int64_t n0, int64_t n1,
                       int64_t P, int K, const double *M, T *out) {
    T c[k + 1][k + 1];
    coefficients<k>(M, c);
    const T top = T(K + k + 1);
    for (int64_t n = n0; n < n1; n++) {
      const T *xr = x + n * P;
      T *orow = out + n * (K + 1) * P;
      int64_t p = 0;
      for (; p + L <= P; p += L) {
        V w[k + 1];
        const V first = locate<k>(load(xr + p), load(shift + p), load(inv_h + p), top, c, w);
        for (int i = 0; i < K; i++) {
          const V d = T(i) - first;
          V val = V{};
          for (int r = 0; r <= k; r++) val = d == T(r) ? w[r] : val;
          std::memcpy(orow + int64_t(i + 1) * P + p, &val, sizeof(V));
        }
      }
      for (; p < P; p++) {
        T w[k + 1];
        const T first = locate1<k>(xr[p], shift[p], inv_h[p], top, c, w);
        for (int i = 0; i < K; i++) {
          const T d = T(i) - first;
          T val = 0;
          for (int r = 0; r <= k; r++) val = d == T(r) ? w[r] : val;
          orow[int64_t(i + 1) * P + p] = val;
        }
      }
    }
  }

  // grad_x[n, p] += inv_h[p] * sum_i g[n, (i + 1) P + p] dB_i/dv at x[n, p].
  static void input_grad(const T *x, const T *g, const T *shift, const T *inv_h, int64_t n0,
                         int64_t n1, int64_t P, int K, const double *M, T *grad_x) {
    T c[k + 1][k + 1];
    coefficients<k - 1>(M, c);
    const T top = T(K + k + 1);
    for (int64_t n = n0; n < n1; n++) {
      const T *xr = x + n * P;
      const T *grow = g + n * (K + 1) * P;
      T *gx = grad_x + n * P;
      int64_t p = 0;
      for (; p + L <= P; p += L) {
        V w[k + 1];
        const V hv = load(inv_h + p);
        const V first = locate<k - 1>(load(xr + p), load(shift + p), hv, top, c, w);
        V acc = V{};
        for (int i = 0; i < K; i++) {
          const V d = T(i) - first;
          V val = V{};
          for (int r = 0; r <= k; r++) val = d == T(r) ? w[r] : val;
          acc += load(grow + int64_t(i + 1) * P + p) * val;
        }
        const V out = load(gx + p) + acc * hv;
        std::memcpy(gx + p, &out, sizeof(V));
      }
      for (; p < P; p++) {
        T w[k + 1];
        const T first = locate1<k - 1>(xr[p], shift[p], inv_h[p], top, c, w);
        T acc = 0;
        for (int i = 0; i < K; i++) {
          const T d = T(i) - first;
          T val = 0;
          for (int r = 0; r <= k; r++) val = d == T(r) ? w[r] : val;
          acc += grow[int64_t(i + 1) * P + p] * val;
        }
        gx[p] += acc * inv_h[p];
      }
    }
  }
};

template <typename T, typename F>
void rows(int64_t N, int64_t P, int K, int threads, F &&body) {
#ifdef _OPENMP
  // Parallel only when asked for and worth it: one thread never enters an OpenMP region.
  if (threads > 1 && N * P * (K + 1) >= (1 << 16)) {
#pragma omp parallel num_threads(threads)
    {
      const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t chunk = (N + nt - 1) / nt;
      const int64_t n0 = id * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
      if (n0 < n1) body(n0, n1);
    }
    return;
  }
#endif
  (void)P, (void)K, (void)threads;
  body(int64_t(0), N);
}

template <typename T>
int features(const T *x, const T *shift, const T *inv_h, int64_t N, int64_t P, int k, int K,
             const double *M, T *out, int threads) {
  switch (k) {
#define KANGNN_CASE(K_)                                                                     \
  case K_:                                                                                  \
    rows<T>(N, P, K, threads, [&](int64_t a, int64_t b) {                                   \
      Rows<T, K_>::features(x, shift, inv_h, a, b, P, K, M, out);                           \
    });                                                                                     \
    return 0;
    KANGNN_CASE(1) KANGNN_CASE(2) KANGNN_CASE(3) KANGNN_CASE(4) KANGNN_CASE(5)
    KANGNN_CASE(6) KANGNN_CASE(7)
#undef KANGNN_CASE
  }
  return 1;  // order not compiled here: the caller takes another path
}

template <typename T>
int input_grad(const T *x, const T *g, const T *shift, const T *inv_h, int64_t N, int64_t P,
               int k, int K, const double *M, T *grad_x, int threads) {
  switch (k) {
#define KANGNN_CASE(K_)                                                                     \
  case K_:                                                                                  \
    rows<T>(N, P, K, threads, [&](int64_t a, int64_t b) {                                   \
      Rows<T, K_>::input_grad(x, g, shift, inv_h, a, b, P, K, M, grad_x);                   \
    });                                                                                     \
    return 0;
    KANGNN_CASE(1) KANGNN_CASE(2) KANGNN_CASE(3) KANGNN_CASE(4) KANGNN_CASE(5)
    KANGNN_CASE(6) KANGNN_CASE(7)
#undef KANGNN_CASE
  }
  return 1;
}

}  // namespace

extern "C" {

int kangnn_features_f32(const float *x, const float *shift, const float *inv_h, int64_t N,
                        int64_t P, int k, int K, const double *M, float *out, int threads) {
  return features(x, shift, inv_h, N, P, k, K, M, out, threads);
}

int kangnn_features_f64(const double *x, const double *shift, const double *inv_h, int64_t N,
                        int64_t P, int k, int K, const double *M, double *out, int threads) {
  return features(x, shift, inv_h, N, P, k, K, M, out, threads);
}

int kangnn_input_grad_f32(const float *x, const float *g, const float *shift, const float *inv_h,
                          int64_t N, int64_t P, int k, int K, const double *M, float *grad_x,
                          int threads) {
  return input_grad(x, g, shift, inv_h, N, P, k, K, M, grad_x, threads);
}

int kangnn_input_grad_f64(const double *x, const double *g, const double *shift,
                          const double *inv_h, int64_t N, int64_t P, int k, int K,
                          const double *M, double *grad_x, int threads) {
  return input_grad(x, g, shift, inv_h, N, P, k, K, M, grad_x, threads);
}

}  // extern "C"
