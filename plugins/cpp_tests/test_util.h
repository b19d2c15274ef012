// A minimal test harness (no third-party framework needed): CHECK records failures, main
// returns non-zero when any check failed; 77 means "skipped" to ctest (SKIP_RETURN_CODE).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        ++g_checks;                                                                  \
        if (!(cond)) {                                                               \
            ++g_failures;                                                            \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_MSG(cond, msg)                                                                          \
    do {                                                                                              \
        ++g_checks;                                                                                   \
        if (!(cond)) {                                                                                \
            ++g_failures;                                                                             \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s (%s)\n", __FILE__, __LINE__, #cond,          \
                         std::string(msg).c_str());                                                   \
        }                                                                                             \
    } while (0)

inline int finish(const char* name) {
    std::printf("%s: %d checks, %d failures\n", name, g_checks, g_failures);
    return g_failures ? 1 : 0;
}

// Deterministic pseudo-random numbers (xorshift), independent of the platform's rand().
struct Rng {
    unsigned long long s;
    explicit Rng(unsigned long long seed) : s(seed * 2654435761ull + 1) {}
    unsigned long long next() { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s; }
    float uniform() { return static_cast<float>((next() >> 11) * (1.0 / 9007199254740992.0)); }
    float normal() {
        float u1 = uniform() + 1e-7f, u2 = uniform();
        return std::sqrt(-2.f * std::log(u1)) * std::cos(6.2831853f * u2);
    }
    std::vector<float> normals(size_t n, float scale = 1.f) {
        std::vector<float> v(n);
        for (auto& x : v) x = normal() * scale;
        return v;
    }
};

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
