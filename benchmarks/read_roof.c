/* The read roof of benchmarks/cpu_time_linear.py: `threads` POSIX threads each read one
 * contiguous share of a buffer once, as four sequential streams (the share's quarters, one
 * 64-byte line from each in turn as two 32-byte loads, 4 independent accumulators, a software
 * prefetch 1 KiB ahead in each stream, no stores), and the caller waits for all of them. Four
 * prefetched streams per thread, not one plain one: on an Intel Xeon VM (two threads, 1 GiB)
 * one plain stream per thread read 19-25 GB/s, four 28 GB/s, four prefetched 30-31 GB/s (the
 * best of the patterns tried; eight streams gained nothing more). Built on the fly by
 * read_roof.py (cc -O2 -mavx2 -shared -pthread); x86-64 AVX2 and a plain 64-bit fallback. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

typedef struct {
  const uint8_t* p;
  size_t n;
  uint64_t out;
} Share;

static void* read_share(void* arg) {
  Share* s = (Share*)arg;
  uint64_t r = 0;
  size_t i = 0;
#if defined(__AVX2__)
  const size_t q = s->n / 4 / 64 * 64; /* the four streams: [k q, (k + 1) q), k = 0..3 */
  const uint8_t* p0 = s->p;
  const uint8_t *p1 = p0 + q, *p2 = p0 + 2 * q, *p3 = p0 + 3 * q;
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (; i < q; i += 64) {
    _mm_prefetch((const char*)(p0 + i + 1024), _MM_HINT_T0);
    _mm_prefetch((const char*)(p1 + i + 1024), _MM_HINT_T0);
    _mm_prefetch((const char*)(p2 + i + 1024), _MM_HINT_T0);
    _mm_prefetch((const char*)(p3 + i + 1024), _MM_HINT_T0);
    a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i*)(p0 + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i*)(p1 + i)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i*)(p2 + i)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i*)(p3 + i)));
    a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i*)(p0 + i + 32)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i*)(p1 + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i*)(p2 + i + 32)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i*)(p3 + i + 32)));
  }
  const __m256i t = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  r = (uint64_t)_mm256_extract_epi64(t, 0) + (uint64_t)_mm256_extract_epi64(t, 1) +
      (uint64_t)_mm256_extract_epi64(t, 2) + (uint64_t)_mm256_extract_epi64(t, 3);
  i = 4 * q; /* the tail past the streams, read by the loop below */
#endif
  for (; i + 8 <= s->n; i += 8) r += *(const uint64_t*)(s->p + i);
  s->out = r;
  return NULL;
}

/* Reads n bytes at p (64-byte aligned, n % 128 == 0 for the vector loop) with `threads`
 * threads (the caller runs the first share); returns a checksum so nothing is optimized out. */
uint64_t qpart_read_roof(const uint8_t* p, size_t n, int threads) {
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  Share shares[64];
  pthread_t tid[64];
  const size_t per = n / (size_t)threads / 128 * 128;
  for (int t = 0; t < threads; ++t) {
    shares[t].p = p + (size_t)t * per;
    shares[t].n = t == threads - 1 ? n - (size_t)t * per : per;
  }
  for (int t = 1; t < threads; ++t) pthread_create(&tid[t], NULL, read_share, &shares[t]);
  read_share(&shares[0]);
  uint64_t sum = shares[0].out;
  for (int t = 1; t < threads; ++t) {
    pthread_join(tid[t], NULL);
    sum += shares[t].out;
  }
  return sum;
}
