"""The public sets `prepare` knows: where each file comes from, where it goes, the layout its
loader expects, and the manual steps for sets without an official download."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

# Official addresses, from the revisitop repository's python/download.py
# (filipradenovic/revisitop): face-blurred "-v1" image archives on the Oxford VGG site,
# ground-truth pickles on the revisitop data site, 1M distractors on ptak.felk.cvut.cz.
# VoxDet: the Google Drive files linked from the VoxDet README (Jaraxxus-Me/VoxDet), through
# Drive's direct-download address. That address, the archive format and the folders inside
# could not be checked from here (no network): the format is detected from content and the
# layout verified after unpacking. None of the publishers give checksums.
BASES = {
    "vgg": "https://www.robots.ox.ac.uk/~vgg/data",
    "revisitop": "http://cmp.felk.cvut.cz/revisitop/data",
    "revisitop1m": "http://ptak.felk.cvut.cz/revisitop/revisitop1m",
    "gdrive": "https://drive.usercontent.google.com",
}


@dataclass(frozen=True)
class Remote:
    """One file to fetch. `dest` is a file path, or with `extract` the folder to unpack into."""

    base: str
    path: str
    dest: str
    extract: bool = False
    flatten: bool = False
    """Move every extracted file straight into `dest`, dropping the archive's folders."""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    filename: str | None = None
    """Local name of the download; default: the last part of `path`."""

    def url(self, mirror: str | None) -> str:
        return f"{(mirror or BASES[self.base]).rstrip('/')}/{self.path}"

    @property
    def local_name(self) -> str:
        return self.filename or PurePosixPath(self.path.split("?")[0]).name


@dataclass(frozen=True)
class Source:
    description: str
    default_root: str
    layout: str
    """The folders and files the loader expects under --root."""
    files: tuple[Remote, ...] = ()
    manual: str = ""
    """Steps for a person, for sets without an official download (or extra steps after)."""
    expect: tuple[str, ...] = ()
    """Paths under --root that must exist once the set is in place."""


def _revisitop(name: str, archives: tuple[str, ...], folder: str) -> Source:
    return Source(
        description=f"Revisited {'Oxford' if name == 'roxford5k' else 'Paris'} ({name}) "
        "images and ground truth",
        default_root="data/revisitop",
        layout=f"{name}/gnd_{name}.pkl\n{name}/jpg/<image>.jpg",
        files=tuple(
            Remote("vgg", f"{folder}/{archive}", f"{name}/jpg", extract=True, flatten=True)
            for archive in archives
        )
        + (Remote("revisitop", f"datasets/{name}/gnd_{name}.pkl", f"{name}/gnd_{name}.pkl"),),
        expect=(f"{name}/gnd_{name}.pkl", f"{name}/jpg"),
    )


SOURCES: dict[str, Source] = {
    "roxford5k": _revisitop("roxford5k", ("oxbuild_images-v1.tgz",), "oxbuildings"),
    "rparis6k": _revisitop("rparis6k", ("paris_1-v1.tgz", "paris_2-v1.tgz"), "parisbuildings"),
    "revisitop1m": Source(
        description="revisitop 1M distractors (100 archives, about 1M images)",
        default_root="data/revisitop",
        layout="revisitop1m/revisitop1m.txt\nrevisitop1m/jpg/<listed path>",
        files=tuple(
            Remote("revisitop1m", f"jpg/revisitop1m.{i}.tar.gz", "revisitop1m/jpg", extract=True)
            for i in range(1, 101)
        )
        + (Remote("revisitop1m", "revisitop1m.txt", "revisitop1m/revisitop1m.txt"),),
        expect=("revisitop1m/revisitop1m.txt", "revisitop1m/jpg"),
    ),
    "voxdet": Source(
        description="VoxDet OWID + RoboTools (the images behind VoxDet-SoIR's anns.pt)",
        default_root="data/VoxDet",  # the VoxDet release's own name, which the robotools and owid presets read
        layout="OWID/P1/<cat_id>/{rgb,mask}/\nOWID/P2/images/ + *_annotations.json\n"
        "RoboTools/test/ + scene_gt_coco_all.json\nRoboTools/test_video/<name>_<id>/{rgb,mask}/",
        files=(
            Remote(
                "gdrive",
                "download?id=1sRHaVd4exOmGqFUVT6JKUzEOrDeHmlbT&export=download&confirm=t",
                ".",
                extract=True,
                filename="voxdet_owid.archive",
            ),
            Remote(
                "gdrive",
                "download?id=1kXR-Z-sJlTnWy3HRGWAcV6_IIJgRHbD6&export=download&confirm=t",
                ".",
                extract=True,
                filename="voxdet_robotools.archive",
            ),
        ),
        manual="Then build anns.pt with VoxDet-SoIR's create_dataset.py "
        "(github.com/pihash2k/VoxDet-SoIR): python create_dataset.py --voxdet-root <root> "
        "--output-file <root>/anns.pt. If Drive refuses the download (quota), fetch the "
        "OWID and RoboTools links of the VoxDet README by hand and unpack them into <root>.",
        expect=("OWID/P1", "OWID/P2", "RoboTools/test", "RoboTools/test_video"),
    ),
    "pitts30k": Source(
        description="Pittsburgh 30k test split (UTM file names)",
        default_root="data/pitts30k",
        layout="images/test/database/@<utm_east>@<utm_north>@...@.jpg   (10,000)\n"
        "images/test/queries/@<utm_east>@<utm_north>@...@.jpg    (6,816)",
        manual="Run download_pitts30k.py of gmberton/VPR-datasets-downloader (it fetches the "
        "NetVLAD Pittsburgh files from https://data.ciirc.cvut.cz/public/projects/2015netVLAD/"
        "Pittsburgh250k/ and renames every image to its UTM name; the data's terms are the "
        "NetVLAD authors'), then copy its datasets/pitts30k/ to <root>.",
        expect=("images/test/database", "images/test/queries"),
    ),
    "17places": Source(
        description="17places in the VPR-Bench layout",
        default_root="data/17places",
        layout="ref/<int>.jpg\nquery/<int>.jpg\nground_truth_new.npy",
        manual="Download the VPR-Bench datasets linked from the VPR-Bench README "
        "(github.com/MubarizZaffar/VPR-Bench), a surfdrive share: "
        "https://surfdrive.surf.nl/files/index.php/s/sbZRXzYe3l0v67W, and copy its "
        "17places/ folder to <root>.",
        expect=("ref", "query", "ground_truth_new.npy"),
    ),
    "baidu_mall": Source(
        description="Baidu Mall (IDL dataset, CVPR 2017) in AnyLoc's layout",
        default_root="data/baidu_mall",
        layout="training_images_undistort/<name>.jpg   training_gt/<name>.camera\n"
        "query_images_undistort/<name>.jpg      query_gt/<name>.camera",
        manual="Download IDL_dataset_cvpr17_3852.zip from the link in AnyLoc's "
        "custom_datasets/baidu_dataloader.py, "
        "https://www.dropbox.com/s/4mksiwkxb7t4a8a/IDL_dataset_cvpr17_3852.zip, and unpack "
        "it into <root> (AnyLoc uses `jar xf`, as some unzip versions reject the archive).",
        expect=("training_images_undistort", "training_gt", "query_images_undistort", "query_gt"),
    ),
    "gl3d": Source(
        description="GL3D evaluation set of the MIRorR matchable-image retrieval benchmark",
        default_root="data/gl3d",
        layout="eval_img_list.txt\ngl3d_gt_pairs\n<paths listed in eval_img_list.txt>",
        manual="Follow the GL3D section of the MIRorR README (github.com/hlzz/mirror): unzip "
        "its eval_data.zip (896x896 images, about 3.7 GB; https://s3-ap-southeast-1.amazonaws"
        ".com/awsiostest-deployments-mobilehub-806196172/GL3D/eval_data.zip) into <root>, "
        "and copy data/gl3d/eval_img_list.txt and data/gl3d/gl3d_gt_pairs from that repository.",
        expect=("eval_img_list.txt", "gl3d_gt_pairs"),
    ),
}
