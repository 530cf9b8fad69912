variable "topology" {
  description = "The deployment's shared topology (mesh/topology.py). Read here: the region names and each NATS server's name (unique in the deployment), host and advertise_host."
  type = object({
    regions = list(object({
      name = string
      nats = list(object({
        name           = string
        host           = string
        advertise_host = string
      }))
    }))
  })

  validation {
    condition     = alltrue([for r in var.topology.regions : alltrue([for s in r.nats : can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$", s.name))])])
    error_message = "Every NATS server name must be 1-63 of A-Z a-z 0-9 _ -, starting with a letter or digit (as mesh/topology.py requires)."
  }
}

variable "nats_addresses" {
  description = "Per region name: its NATS servers' Elastic IPs (public_ips) and their AWS public DNS names (public_dns), in topology order (the region module's nats_public_ips and nats_public_dns outputs). Each server's certificate names them besides its advertise_host. A region left out gets certificates for its topology names only."
  type = map(object({
    public_ips = list(string)
    public_dns = list(string)
  }))
  default = {}
}

variable "name" {
  description = "Deployment name, in the CA certificate's common name (\"NAME NATS CA\")."
  type        = string
  default     = "edgemesh"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,15}$", var.name))
    error_message = "The name must be 1-16 of a-z 0-9 -, starting with a letter."
  }
}

variable "ca_validity_hours" {
  description = "Validity of the CA certificate in hours (default 87600, 10 years). It is not renewed early: replacing the CA re-issues every server certificate at once (docs/terraform.md, TLS)."
  type        = number
  default     = 87600

  validation {
    condition     = var.ca_validity_hours >= 8760 && floor(var.ca_validity_hours) == var.ca_validity_hours
    error_message = "The ca_validity_hours must be a whole number of 8760 (a year) or more."
  }
}

variable "server_validity_hours" {
  description = "Validity of each NATS server certificate in hours (default 8760, a year)."
  type        = number
  default     = 8760

  validation {
    condition     = var.server_validity_hours >= 720 && var.server_validity_hours <= 87600 && floor(var.server_validity_hours) == var.server_validity_hours
    error_message = "The server_validity_hours must be a whole number from 720 (30 days) to 87600."
  }
}

variable "server_early_renewal_hours" {
  description = "A server certificate is re-issued by any `terraform apply` run within this many hours of its end (default 1440, 60 days; keep it well below server_validity_hours)."
  type        = number
  default     = 1440

  validation {
    condition     = var.server_early_renewal_hours >= 0 && floor(var.server_early_renewal_hours) == var.server_early_renewal_hours
    error_message = "The server_early_renewal_hours must be a whole number of 0 or more."
  }
}
