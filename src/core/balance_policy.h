// How an upstream group picks a server (`upstreams.<name>.balance`): named here, below
// both the config that reads it and the balancer (http/balancer.h) that implements it.
#ifndef SLUICE_CORE_BALANCE_POLICY_H_
#define SLUICE_CORE_BALANCE_POLICY_H_

namespace sluice {

enum class BalancePolicy { kRoundRobin, kWeightedRoundRobin, kLeastConnections, kHash, kRandom };

}  // namespace sluice

#endif  // SLUICE_CORE_BALANCE_POLICY_H_
