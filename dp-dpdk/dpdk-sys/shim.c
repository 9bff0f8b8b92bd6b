/* See shim.h. Each function is a one-line forward to the inline original. */
#include <rte_ethdev.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include "shim.h"

uint16_t marllb_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t marllb_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *marllb_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

void marllb_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

int marllb_errno(void)
{
	return rte_errno;
}

unsigned marllb_lcore_id(void)
{
	return rte_lcore_id();
}

uint64_t marllb_rss_hf_ip_tcp_udp(void)
{
	return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP;
}

uint16_t marllb_pktmbuf_headroom(void)
{
	return RTE_PKTMBUF_HEADROOM;
}
