variable "parent_zone_id" {
  description = "ID of the existing Route 53 hosted zone that contains the geo-DNS zone (e.g. the zone of example.com when the topology's dns.zone is geo.example.com). Every name in the topology must be inside it."
  type        = string

  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,31}$", var.parent_zone_id))
    error_message = "The parent_zone_id must be a Route 53 hosted zone ID such as Z0123456789ABCDEFGHIJ."
  }
}

variable "topology" {
  description = "The deployment's shared topology (mesh/topology.py). Its dns.zone is delegated to ns-REGION.ZONE, glued at each control plane's dns_public_address (the address the geo-DNS server itself answers for its name; null: the region's control_plane_address); the hosts of its edge URLs, control-plane URLs and NATS advertise_host names get records. Give dns_public_address in every control_plane (null when unused)."
  type = object({
    regions = list(object({
      name      = string
      latitude  = number
      longitude = number
      nats = list(object({
        name           = string
        host           = string
        advertise_host = string
        client_port    = number
        cluster_port   = number
        gateway_port   = number
        monitor_port   = number
      }))
      edges = list(object({
        name      = string
        url       = string
        bind_host = string
      }))
      control_plane = object({
        url                = string
        bind_host          = string
        dns_host           = string
        dns_port           = number
        dns_public_address = string
      })
      public_addresses = list(string)
    }))
    dns = object({
      zone           = string
      ttl_s          = number
      default_region = string
    })
  })

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.?$", lower(var.topology.dns.zone)))
    error_message = "The topology's dns.zone must be a DNS name with two or more labels (a subdomain of the parent zone)."
  }

  validation {
    condition     = alltrue([for r in var.topology.regions : r.control_plane.dns_public_address == null ? true : can(cidrhost("${r.control_plane.dns_public_address}/${length(regexall(":", r.control_plane.dns_public_address)) > 0 ? 128 : 32}", 0)) && !contains(["0.0.0.0", "::"], r.control_plane.dns_public_address)])
    error_message = "A control_plane's dns_public_address must be null or an IPv4 or IPv6 address other than 0.0.0.0 and :: (it becomes the name server's glue record)."
  }
}

variable "regions" {
  description = "Per topology region: the edge load balancer's addresses, the control plane's public address (its cp.REGION name, and the name server's glue when the topology gives no dns_public_address), and the CNAME target of each NATS server in topology order (the region module's dns_records output)."
  type = map(object({
    edge_addresses        = list(string)
    control_plane_address = string
    nats_targets          = list(string)
  }))

  validation {
    condition     = length(var.regions) >= 1
    error_message = "Give at least one region."
  }
}

variable "ns_ttl" {
  description = "TTL in seconds of the delegation (NS and glue records)."
  type        = number
  default     = 3600

  validation {
    condition     = var.ns_ttl >= 60 && var.ns_ttl <= 172800
    error_message = "The ns_ttl must be 60 to 172800 seconds."
  }
}

variable "record_ttl" {
  description = "TTL in seconds of the per-region names (edge, control plane, NATS servers)."
  type        = number
  default     = 60

  validation {
    condition     = var.record_ttl >= 1 && var.record_ttl <= 86400
    error_message = "The record_ttl must be 1 to 86400 seconds."
  }
}
