/*
 * bcryptprimitives.c: a stand-in for Windows' bcryptprimitives.dll, for running the
 * x86_64-pc-windows-gnu tests under Wine < 8.13 (ci/windows.sh builds it).
 *
 * Why it exists: since Rust 1.78 the standard library gets its random bytes (the seeds of
 * HashMap's RandomState, among others) from bcryptprimitives.dll!ProcessPrng, which it
 * imports at load time. Wine only gained that DLL in 8.13; Debian 12 ships Wine 8.0, where
 * every Rust test executable dies at start-up with an unresolved import before main runs.
 * ci/windows.sh compiles this file with mingw-w64 into the Wine prefix's system32, and only
 * when the installed Wine does not provide the DLL itself. It is test infrastructure: it is
 * never linked into coring and never shipped.
 *
 * ProcessPrng fills the buffer with random bytes and, as documented by Microsoft, always
 * returns TRUE. Here the bytes come from RtlGenRandom (advapi32!SystemFunction036), which
 * Wine 8.0 implements on top of the host's random source. RtlGenRandom takes a ULONG
 * length, so large requests are served in chunks.
 *
 * Build (what ci/windows.sh runs):
 *   x86_64-w64-mingw32-gcc -O2 -shared -s -o bcryptprimitives.dll \
 *       bcryptprimitives.c bcryptprimitives.def -ladvapi32
 */
#include <windows.h>
#include <ntsecapi.h> /* RtlGenRandom */

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!RtlGenRandom(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
