variable "domain" {
  description = "The Route 53 hosted zone the deployment's names go in (e.g. example.com): edge.REGION.DOMAIN, nats-N.REGION.DOMAIN, cp.REGION.DOMAIN, and geo.DOMAIN delegated to the control plane."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "The domain must be a lower-case DNS name such as example.com (no trailing dot)."
  }
}

variable "parent_zone_id" {
  description = "ID of the Route 53 hosted zone of var.domain."
  type        = string

  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,31}$", var.parent_zone_id))
    error_message = "The parent_zone_id must be a Route 53 hosted zone ID such as Z0123456789ABCDEFGHIJ."
  }
}

variable "region" {
  description = "Name of the edgemesh region."
  type        = string
  default     = "eu"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", var.region))
    error_message = "The region must be 1-32 of a-z 0-9 -, start with a letter and not end with '-'."
  }
}

variable "aws_region" {
  description = "The AWS region to deploy into."
  type        = string
  default     = "eu-central-1"
}

variable "latitude" {
  description = "Latitude of the region (geo-DNS distance), -90 to 90."
  type        = number
  default     = 50.11

  validation {
    condition     = var.latitude >= -90 && var.latitude <= 90
    error_message = "The latitude must be -90 to 90."
  }
}

variable "longitude" {
  description = "Longitude of the region (geo-DNS distance), -180 to 180."
  type        = number
  default     = 8.68

  validation {
    condition     = var.longitude >= -180 && var.longitude <= 180
    error_message = "The longitude must be -180 to 180."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.10.0.0/16"
}

variable "edgemesh_version" {
  description = "The edgemesh release the nodes install from PyPI."
  type        = string
  default     = "0.1.0"
}

variable "secrets" {
  description = "NATS passwords and API keys (the secrets JSON of mesh/secrets.py), e.g. from a git-ignored secrets.auto.tfvars.json."
  type = object({
    nats = object({
      edge    = string
      control = string
      sys     = string
      route   = string
      gateway = string
    })
    api_keys = list(string)
  })
  sensitive = true
}

variable "nats_servers" {
  description = "NATS servers in the region's cluster."
  type        = number
  default     = 3

  validation {
    condition     = var.nats_servers >= 1 && var.nats_servers <= 5 && floor(var.nats_servers) == var.nats_servers
    error_message = "The nats_servers must be a whole number from 1 to 5."
  }
}

variable "operator_cidrs" {
  description = "CIDRs allowed to the control-plane API and NATS monitoring."
  type        = list(string)
  default     = []
}

variable "availability_zones" {
  description = "Availability zones (two or more). Default: the first two available."
  type        = list(string)
  default     = null
}

variable "ami_id" {
  description = "AMI of the nodes. Default: the latest Amazon Linux 2023."
  type        = string
  default     = null
}

variable "geoip_db_s3_uri" {
  description = "S3 URI (s3://BUCKET/KEY.mmdb) of a MaxMind City database you uploaded (GeoLite2-City or GeoIP2-City; MaxMind requires a licence, so none ships with edgemesh). Each control plane fetches it before it starts and locates clients with it. Null: every client gets the topology's default region, whatever its location."
  type        = string
  default     = null
}
