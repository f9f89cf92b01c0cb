/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/* The key mix every hand-written reference with a direct key uses. */
#pragma once

/* DEVMAP_HASH does not hash its key (bucket = key & (buckets - 1)): a
 * program that keys it by packet fields must mix them, or adjacent keys
 * share one bucket and every lookup walks it. murmur3's fmix32, as the
 * generated code does (docs/kernel.md). */
static __always_inline __u32 mix(__u32 x)
{
	x ^= x >> 16;
	x *= 0x85ebca6bu;
	x ^= x >> 13;
	x *= 0xc2b2ae35u;
	x ^= x >> 16;
	return x;
}
