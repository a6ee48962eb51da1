"""Offers: their terms and what they cost per buyer (terms), the order history a
forecast starts from (history), offer bands (bands) and redemptions read from
the orders (redemptions)."""
