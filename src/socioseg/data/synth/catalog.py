"""The synthetic city's catalogue: socio-classes, their functions and looks, and place names."""

from __future__ import annotations

from dataclasses import dataclass

from socioseg.data.levels import FUNCTION_NAMES


@dataclass(frozen=True)
class Kind:
    """A socio-class: its function, how it looks and how its places are named."""

    socio_class: str
    function: str
    style: str
    names: tuple[str, ...]


KINDS: tuple[Kind, ...] = (
    Kind(
        "School",
        "Educational",
        "campus",
        ("{p} No. {n} Middle School", "{p} Primary School", "{p} Experimental School"),
    ),
    Kind(
        "University",
        "Educational",
        "campus",
        ("{p} University", "{p} Normal University", "{p} University of Technology"),
    ),
    Kind(
        "Hospital",
        "Medical",
        "hospital",
        (
            "{p} People's Hospital",
            "{p} No. {n} Hospital",
            "{p} Hospital of Traditional Chinese Medicine",
        ),
    ),
    Kind(
        "Health Center",
        "Medical",
        "hospital",
        ("{p} Community Health Center", "{p} Maternal and Child Health Center"),
    ),
    Kind(
        "Park", "Park and greenspace", "park", ("{p} Park", "{p} Forest Park", "{p} Wetland Park")
    ),
    Kind("Square", "Park and greenspace", "plaza", ("{p} Square", "{p} Culture Square")),
    Kind(
        "Stadium",
        "Sport and cultural",
        "stadium",
        ("{p} Stadium", "{p} Sports Center", "{p} Olympic Sports Center"),
    ),
    Kind("Soccer Field", "Sport and cultural", "pitch", ("{p} Football Field", "{p} Soccer Park")),
    Kind(
        "Museum",
        "Sport and cultural",
        "museum",
        ("{p} Museum", "{p} Art Museum", "{p} Science and Technology Museum"),
    ),
    Kind(
        "Shopping Mall",
        "Commercial service",
        "mall",
        ("{p} Wanda Plaza", "{p} Shopping Center", "{p} Intime Mall"),
    ),
    Kind(
        "Hotel",
        "Commercial service",
        "hotel",
        ("{p} Hotel", "{p} International Hotel", "{p} Garden Hotel"),
    ),
    Kind(
        "Railway Station",
        "Transportation stations",
        "station",
        ("{p} Railway Station", "{p} South Railway Station", "{p} East Railway Station"),
    ),
    Kind(
        "Bus Station",
        "Transportation stations",
        "depot",
        ("{p} Bus Terminal", "{p} Long-distance Bus Station"),
    ),
    Kind(
        "Office Building",
        "Business office",
        "office",
        ("{p} Financial Center", "{p} International Trade Center", "{p} Tower"),
    ),
    Kind(
        "Factory",
        "Industrial",
        "factory",
        ("{p} Steel Works", "{p} Electronics Factory", "{p} Machinery Plant"),
    ),
    Kind(
        "Industrial Park",
        "Industrial",
        "factory",
        ("{p} Industrial Park", "{p} Hi-tech Industrial Zone"),
    ),
    Kind(
        "Residential Community",
        "Residential",
        "residential",
        ("{p} Garden", "{p} Community", "{p} Residence Phase {n}"),
    ),
    Kind(
        "Government",
        "Administrative",
        "government",
        ("{p} District People's Government", "{p} Municipal Government"),
    ),
    Kind(
        "Police Station",
        "Administrative",
        "government",
        ("{p} Police Station", "{p} Public Security Bureau"),
    ),
)
PLACES = (
    "Qinghe", "Lakeview", "Dongcheng", "Xicheng", "Xinhua", "Riverside", "Hongqiao", "Zhongshan",
    "Binhai", "Nanhu", "Baiyun", "Jiangbei", "Jinshui", "Longhua", "Tianhe", "Yuelu", "Wuhou",
    "Gulou", "Taishan", "Chaoyang", "Haidian", "Xiangshan", "Meilin", "Songjiang", "Guanghua",
    "Hexi", "Greenwood", "Hillside", "Golden Bay", "Pearl River", "East Lake", "West Lake",
    "Jade Spring", "Phoenix", "Dragon Bay", "Yongning", "Fuxing", "Heping", "Minzhu", "Shuangta",
)  # fmt: skip
MINOR_POIS = (
    "China Construction Bank",
    "7-Eleven",
    "Sinopec Gas Station",
    "Bus Stop",
    "Pharmacy",
    "Noodle House",
    "Post Office",
)
FUNCTION_COLORS = dict(zip(FUNCTION_NAMES, (
    (245, 124, 0), (0, 150, 136), (103, 58, 183), (56, 160, 72), (121, 85, 72),
    (63, 81, 181), (30, 120, 220), (110, 110, 110), (229, 57, 53), (216, 27, 96),
), strict=True))  # fmt: skip
