/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Bursts (pyfrag.h): many fragments per call, so that a caller paying a
 * fixed price per call (Python through ctypes) pays it once per burst.
 * pf_cache_alloc_bulk (and pf_shared_alloc_bulk) is all or nothing; pf_cache_free_bulk frees every
 * fragment it is given and reports the first failure; pf_recv_burst fills
 * fragments from one recvmmsg and frees those no datagram filled, so a
 * failed call leaves nothing allocated; pf_send_burst is one sendmmsg.
 * Socket errors keep the kernel's errno (EAGAIN on an empty non-blocking
 * socket, EBADF, ENOTSOCK...).
 */
#include "api/api.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>



/* Free frags[0..n) newest first, so that the cache can take their bytes back. */
static void free_newest_first(pf_cache_t *cache, void **frags, const uint32_t *sizes,
			      size_t size, size_t n)
{
	while (n--)
		pf_cache_free(cache, frags[n], sizes ? sizes[n] : size);
}

int pf_cache_alloc_bulk(pf_cache_t *cache, size_t fragsz, size_t n, void **out)
{
	if (!cache || (!out && n)) {
		pf__fail(EINVAL, "cache and out must not be NULL");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		out[i] = pf_cache_alloc(cache, fragsz);
		if (!out[i]) {
			int err = errno;
			const char *message = pf_last_error_message();
			free_newest_first(cache, out, NULL, fragsz, i);
			pf__fail(err, message);
			return -1;
		}
	}
	return 0;
}

int pf_shared_alloc_bulk(pf_shared_t *arena, size_t fragsz, size_t n, void **out)
{
	if (!out && n) {
		pf__fail(EINVAL, "out must not be NULL");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		out[i] = pf_shared_alloc(arena, fragsz);
		if (!out[i]) {
			int err = errno;
			const char *message = pf_last_error_message();
			while (i--)
				pf_shared_free(arena, out[i]);
			pf__fail(err, message);
			return -1;
		}
	}
	return 0;
}

int pf_cache_free_bulk(pf_cache_t *cache, void *const *frags, const uint32_t *sizes, size_t n)
{
	if (!frags && n) {
		pf__fail(EINVAL, "frags must not be NULL");
		return -1;
	}
	int err = 0;
	const char *message = NULL;
	for (size_t i = 0; i < n; i++) {
		int ret = cache ? pf_cache_free(cache, frags[i], sizes ? sizes[i] : 0)
				: pf_free(frags[i]);
		if (ret != 0 && !err) {
			err = errno;
			message = pf_last_error_message();
		}
	}
	if (!err)
		return 0;
	pf__fail(err, message);
	return -1;
}

static int check_burst(int fd, unsigned n, const void *frags, const uint32_t *lens)
{
	if (fd < 0) {
		pf__fail(EBADF, "not an open file descriptor");
		return -1;
	}
	if (n == 0 || n > PF_BURST_MAX || !frags || !lens) {
		pf__fail(EINVAL, "a burst is 1..PF_BURST_MAX (256) fragments, with frags and lens arrays");
		return -1;
	}
	return 0;
}

/* A socket error: the kernel's errno, with the call's name as the message. */
static int socket_failed(const char *message)
{
	pf__fail(errno, message);
	return -1;
}

/* Where pf_recv_burst's fragments come from: a private cache or a shared arena. */
struct rx_source {
	pf_cache_t *cache;
	pf_shared_t *arena;
};

static int rx_alloc(const struct rx_source *src, size_t size, unsigned n, void **frags)
{
	return src->cache ? pf_cache_alloc_bulk(src->cache, size, n, frags)
			  : pf_shared_alloc_bulk(src->arena, size, n, frags);
}

static void rx_free(const struct rx_source *src, void **frags, size_t size, unsigned n)
{
	if (src->cache) {
		free_newest_first(src->cache, frags, NULL, size, n);
		return;
	}
	while (n--)
		pf_shared_free(src->arena, frags[n]);
}

static int recv_into(const struct rx_source *src, int fd, size_t size, unsigned n, int flags,
		     void **frags, uint32_t *lens, void *names, uint32_t *namelens)
{
	if (check_burst(fd, n, frags, lens) != 0)
		return -1;
	if (names && !namelens) {
		pf__fail(EINVAL, "namelens must be given with names");
		return -1;
	}
	if (rx_alloc(src, size, n, frags) != 0)
		return -1;
	struct mmsghdr msgs[PF_BURST_MAX];
	struct iovec iov[PF_BURST_MAX];
	memset(msgs, 0, n * sizeof(msgs[0]));
	for (unsigned i = 0; i < n; i++) {
		iov[i] = (struct iovec){ .iov_base = frags[i], .iov_len = size };
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		if (names) {
			msgs[i].msg_hdr.msg_name = (struct sockaddr_storage *)names + i;
			msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
		}
	}
	int got = recvmmsg(fd, msgs, n, flags, NULL);
	if (got < 0) {
		int err = errno;
		rx_free(src, frags, size, n);
		errno = err;
		return socket_failed("recvmmsg failed");
	}
	rx_free(src, frags + got, size, n - (unsigned)got);
	for (int i = 0; i < got; i++) {
		lens[i] = msgs[i].msg_len;
		if (names)
			namelens[i] = msgs[i].msg_hdr.msg_namelen;
	}
	return got;
}

int pf_recv_burst(pf_cache_t *cache, int fd, size_t size, unsigned n, int flags, void **frags,
		  uint32_t *lens, void *names, uint32_t *namelens)
{
	if (!cache) {
		pf__fail(EINVAL, "cache is NULL");
		return -1;
	}
	struct rx_source src = { cache, NULL };
	return recv_into(&src, fd, size, n, flags, frags, lens, names, namelens);
}

int pf_shared_recv_burst(pf_shared_t *arena, int fd, size_t size, unsigned n, int flags,
			 void **frags, uint32_t *lens, void *names, uint32_t *namelens)
{
	struct rx_source src = { NULL, arena };
	return recv_into(&src, fd, size, n, flags, frags, lens, names, namelens);
}

int pf_send_burst(int fd, void *const *frags, const uint32_t *lens, unsigned n, const void *name,
		  uint32_t namelen, int flags)
{
	if (check_burst(fd, n, frags, lens) != 0)
		return -1;
	struct mmsghdr msgs[PF_BURST_MAX];
	struct iovec iov[PF_BURST_MAX];
	memset(msgs, 0, n * sizeof(msgs[0]));
	for (unsigned i = 0; i < n; i++) {
		iov[i] = (struct iovec){ .iov_base = frags[i], .iov_len = lens[i] };
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = (void *)name;
		msgs[i].msg_hdr.msg_namelen = name ? namelen : 0;
	}
	int sent = sendmmsg(fd, msgs, n, flags);
	return sent < 0 ? socket_failed("sendmmsg failed") : sent;
}
