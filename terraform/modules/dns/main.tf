# Route 53 side of the geo-DNS: the topology's dns.zone is delegated to the control
# planes (one name server per region, NS + glue in the parent zone), and every
# per-region name of the topology gets a plain record in the parent zone.

locals {
  topology = var.topology
  zone     = trimsuffix(lower(local.topology.dns.zone), ".")

  # Only regions that are both in the topology and in var.regions.
  regions = { for r in local.topology.regions : r.name => r if contains(keys(var.regions), r.name) }

  # In-bailiwick name servers need glue: their A records live in the parent zone. The
  # geo-DNS server answers the same names itself from the topology (dns_public_address,
  # else dns_host), and resolvers may prefer that answer, so the glue is the topology's
  # address whenever it gives one: the parent and the child cannot disagree.
  name_servers = {
    for name in sort(keys(local.regions)) : "ns-${name}.${local.zone}" => coalesce(
      local.regions[name].control_plane.dns_public_address,
      var.regions[name].control_plane_address,
    )
  }

  url_host = "^https?://([^/:]+)"
  is_ip    = "^[0-9.]+$|:"

  edge_records = {
    for name, r in local.regions : regex(local.url_host, r.edges[0].url)[0] => var.regions[name].edge_addresses
    if length(regexall(local.is_ip, regex(local.url_host, r.edges[0].url)[0])) == 0
  }
  control_plane_records = {
    for name, r in local.regions : regex(local.url_host, r.control_plane.url)[0] => [var.regions[name].control_plane_address]
    if length(regexall(local.is_ip, regex(local.url_host, r.control_plane.url)[0])) == 0
  }
  # A NATS server's name is a CNAME to its Elastic IP's AWS public DNS name: inside its
  # VPC that resolves to the private address (routes stay private), elsewhere to the
  # public one (gateways from other regions).
  nats_records = merge([
    for name, r in local.regions : {
      for i, s in r.nats : s.advertise_host => var.regions[name].nats_targets[i]
      if s.advertise_host != null
    }
  ]...)
}

resource "aws_route53_record" "delegation" {
  zone_id = var.parent_zone_id
  name    = local.zone
  type    = "NS"
  ttl     = var.ns_ttl
  records = keys(local.name_servers)
}

resource "aws_route53_record" "glue" {
  for_each = local.name_servers

  zone_id = var.parent_zone_id
  name    = each.key
  type    = length(regexall(":", each.value)) > 0 ? "AAAA" : "A"
  ttl     = var.ns_ttl
  records = [each.value]
}

resource "aws_route53_record" "edge" {
  for_each = local.edge_records

  zone_id = var.parent_zone_id
  name    = each.key
  type    = "A"
  ttl     = var.record_ttl
  records = each.value
}

resource "aws_route53_record" "control_plane" {
  for_each = local.control_plane_records

  zone_id = var.parent_zone_id
  name    = each.key
  type    = "A"
  ttl     = var.record_ttl
  records = each.value
}

resource "aws_route53_record" "nats" {
  for_each = local.nats_records

  zone_id = var.parent_zone_id
  name    = each.key
  type    = "CNAME"
  ttl     = var.record_ttl
  records = [each.value]
}
