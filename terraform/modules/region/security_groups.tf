################################################################################
# Security groups: only what each role needs
#   edges          client port from anywhere (the only public port besides DNS)
#   control plane  DNS from anywhere (it is the zone's authoritative server),
#                  API from operators
#   NATS           clients from edges and the control plane, routes from each other,
#                  gateways from the other regions' NATS servers, monitoring from the
#                  control planes and operators
################################################################################

locals {
  anywhere = ["0.0.0.0/0"]

  # Other regions' control planes probe this region's NATS (client and monitor ports).
  nats_probe_cidrs = concat(var.operator_cidrs, var.peer_control_plane_cidrs)

  # One entry per rule: { key, group, protocol, port, cidrs or source group }. Rules
  # whose CIDR list is empty (no operators, a single region) are left out below.
  candidate_rules = concat(
    [
      { key = "edge-client-tcp", group = "edge", protocol = "tcp", port = local.client_port, cidrs = local.anywhere, source = null },
      { key = "cp-dns-udp", group = "control_plane", protocol = "udp", port = local.dns_port, cidrs = local.anywhere, source = null },
      { key = "cp-dns-tcp", group = "control_plane", protocol = "tcp", port = local.dns_port, cidrs = local.anywhere, source = null },
      { key = "cp-api-operators", group = "control_plane", protocol = "tcp", port = local.api_port, cidrs = var.operator_cidrs, source = null },
    ],
    [for p in local.nats_client_ports : { key = "nats-client-${p}-from-edge", group = "nats", protocol = "tcp", port = p, cidrs = null, source = "edge" }],
    [for p in local.nats_client_ports : { key = "nats-client-${p}-from-cp", group = "nats", protocol = "tcp", port = p, cidrs = null, source = "control_plane" }],
    [for p in local.nats_client_ports : { key = "nats-client-${p}-from-probes", group = "nats", protocol = "tcp", port = p, cidrs = local.nats_probe_cidrs, source = null }],
    [for p in local.nats_cluster_ports : { key = "nats-route-${p}", group = "nats", protocol = "tcp", port = p, cidrs = null, source = "nats" }],
    [for p in local.nats_gateway_ports : { key = "nats-gateway-${p}-from-peers", group = "nats", protocol = "tcp", port = p, cidrs = var.peer_nats_cidrs, source = null }],
    [for p in local.nats_monitor_ports : { key = "nats-monitor-${p}-from-cp", group = "nats", protocol = "tcp", port = p, cidrs = null, source = "control_plane" }],
    [for p in local.nats_monitor_ports : { key = "nats-monitor-${p}-from-probes", group = "nats", protocol = "tcp", port = p, cidrs = local.nats_probe_cidrs, source = null }],
  )
  ingress_rules = { for r in local.candidate_rules : r.key => r if r.source != null || length(r.cidrs == null ? [] : r.cidrs) > 0 }

  security_group_ids = {
    edge          = aws_security_group.edge.id
    nats          = aws_security_group.nats.id
    control_plane = aws_security_group.control_plane.id
  }
}

resource "aws_security_group" "edge" {
  name_prefix = "${local.name}-edge-"
  description = "edgemesh edge nodes: client port from anywhere"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-edge" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "nats" {
  name_prefix = "${local.name}-nats-"
  description = "edgemesh NATS servers: clients, routes, gateways, monitoring"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-nats" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "control_plane" {
  name_prefix = "${local.name}-cp-"
  description = "edgemesh control plane: geo-DNS from anywhere, API from operators"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-cp" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group_rule" "ingress" {
  for_each = local.ingress_rules

  type                     = "ingress"
  security_group_id        = local.security_group_ids[each.value.group]
  protocol                 = each.value.protocol
  from_port                = each.value.port
  to_port                  = each.value.port
  cidr_blocks              = each.value.cidrs
  source_security_group_id = each.value.source == null ? null : local.security_group_ids[each.value.source]
  description              = each.key
}

# Outbound: PyPI and SSM at boot, peers' gateways, other regions' probes.
resource "aws_security_group_rule" "egress" {
  for_each = local.security_group_ids

  type              = "egress"
  security_group_id = each.value
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = local.anywhere
  description       = "all outbound"
}
