/* Out-of-line copies of DPDK's `static inline` fast-path functions and macros,
 * which have no symbol in the shared libraries and so cannot be bound directly. */
#ifndef MARLLB_DPDK_SHIM_H
#define MARLLB_DPDK_SHIM_H
#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

uint16_t marllb_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t marllb_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *marllb_pktmbuf_alloc(struct rte_mempool *mp);
void marllb_pktmbuf_free(struct rte_mbuf *m);
int marllb_errno(void);
unsigned marllb_lcore_id(void);
uint64_t marllb_rss_hf_ip_tcp_udp(void);
uint16_t marllb_pktmbuf_headroom(void);
#endif
