/* The one header bindgen reads: the DPDK APIs marllb-dpdk uses, plus the shim. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_version.h>
#include <rte_cycles.h>
#include "shim.h"
